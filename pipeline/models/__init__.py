"""The models: backbones, their pretrained weights, heads, and the backbones' ONNX exports.

backbones.py  any timm image model or transformers text encoder, one feature vector per example
weights.py    pretrained weights from a hub name, a local file or folder or an installed package, checked
heads.py      linear or MLP heads (torch), Xavier-initialized
linear.py     NB-LR: logistic regression on Naive Bayes log-count-ratio scaled features (scikit-learn)
exported.py   frozen backbones exported to ONNX and run by ONNX Runtime, alike in training and predict
"""
