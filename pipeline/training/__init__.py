"""The training stage's work: one job trains one model spec over every fold and writes its model folder.

job.py          one job: the folds in turn, resumable, the model folder written (format: pipeline/artifacts.py)
fold_inputs.py  a fold's inputs: tabular/TF-IDF features fitted on its training rows, datasets, embeddings
loaders.py      datasets and DataLoaders: in-memory arrays, lazy images and texts, texts ordered by length
embeddings.py   frozen-backbone embeddings, computed once (torch or ONNX) and cached on disk
loop.py         one fold: fit with early stopping (torch via Lightning, or an estimator), predict its rows
module.py       the LightningModule: backbone (optional) + tabular features -> head
inference.py    what a trained torch model computes, without Lightning (shared by training and predict)
estimators.py   scikit-learn API heads (sklearn, LightGBM, XGBoost, CatBoost): build, fit on a fold, predict
optim.py        parameter groups (reduced backbone LR), LR schedules, losses
targets.py      regression target transforms and predictions back in the target's units
monitors.py     health monitors (Lightning callbacks): update/parameter ratio, dead-ReLU fraction
devices.py      GPU defaults when a GPU is present; a global batch shared among devices
ddp.py          a fold's fit on several devices with Lightning's DDP
predictor.py    a trained member's predictions of new rows, through each fold's fitted preprocessing
"""
