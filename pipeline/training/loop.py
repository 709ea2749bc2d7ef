"""One fold: fit the model on the fold's training rows with early stopping, restore the best checkpoint,
predict the fold's validation rows (out of fold) and the test rows."""

import inspect
import logging
import shutil
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from scipy import sparse
from sklearn.base import is_classifier, is_regressor
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset

from pipeline.choices import Finetune, HeadType
from pipeline.data.contract import Competition
from pipeline.data.tabular import categorical_positions, split_columns
from pipeline.errors import UserError
from pipeline.models.backbones import Backbone
from pipeline.models.heads import build_head
from pipeline.training.devices import fit_strategy, n_devices, per_device_batch, unsharded
from pipeline.training.inputs import ArrayDataset, array_loader, loader
from pipeline.training.module import Net
from pipeline.training.monitors import build_monitors
from pipeline.training.optim import build_loss

log = logging.getLogger(__name__)
# Lightning's tips, device banners and hints about worker counts / logging intervals are noise here
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*", ".*LeafSpec.*"):
    warnings.filterwarnings("ignore", pattern)


def n_outputs(comp: Competition, loss: torch.nn.Module) -> int:
    if isinstance(loss, torch.nn.CrossEntropyLoss):
        return len(comp.classes)
    return 1


def make_loaders(cfg, datasets: dict) -> dict:
    """Array datasets batch by index (large batches; L-BFGS gets the full batch); others per row."""
    t = cfg.trainer
    if isinstance(datasets["train"], ArrayDataset):
        full = cfg.optimizer._target_.endswith("LBFGS")  # L-BFGS is a full-batch method
        train = array_loader(datasets["train"].arrays, len(datasets["train"]) if full else t.batch_size, True)
    else:
        train = loader(datasets["train"], per_device_batch(t), True, t.num_workers)
    return {"train": train, **{k: predict_loader(cfg, datasets[k]) for k in ("val", "test")}}


def predict_loader(cfg, ds: Dataset) -> DataLoader:
    """Every row of `ds` once, in order, in batches of `trainer.predict_batch_size`."""
    t = cfg.trainer
    if isinstance(ds, ArrayDataset):
        return array_loader(ds.arrays, t.predict_batch_size, False)
    return loader(ds, t.predict_batch_size, False, t.num_workers)


def build_net(cfg, comp: Competition, backbone: Backbone | None, in_dim: int) -> Net:
    m = cfg.model
    loss = build_loss(m.loss, comp.task, m.label_smoothing)
    head = build_head(m.head, in_dim, n_outputs(comp, loss))
    trainable = backbone.module if backbone is not None and m.finetune != Finetune.FROZEN else None
    return Net(
        head,
        loss,
        comp.metric,
        hydra.utils.instantiate(cfg.optimizer),
        cfg.scheduler,
        backbone=trainable,
        backbone_lr_mult=m.backbone_lr_mult,
        probe_epochs=m.probe_epochs if m.finetune == Finetune.PROBE_THEN_FULL else 0,
        l1=m.l1,
        tta=m.tta,
        layer_decay=m.get("layer_decay"),  # in model=text_finetune; absent from older presets (keeps their ids)
    )


def train_fold(
    cfg,
    comp: Competition,
    backbone: Backbone | None,
    datasets: dict,
    in_dim: int,
    k: int,
    model_dir: Path,
    y_scale: tuple[float, float],
) -> dict:
    """Fit one fold with Lightning and return its OOF/test predictions, history and best score."""
    start = time.time()
    if cfg.model.head.type == HeadType.SKLEARN:
        return fit_sklearn(cfg, comp, datasets, start)
    net = build_net(cfg, comp, backbone, in_dim)
    net.y_mean, net.y_std = y_scale
    loaders = make_loaders(cfg, datasets)
    ckpt_dir = model_dir / "checkpoints" / f"fold{k}"
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # left by a crashed run of this fold
    mode = "max" if comp.metric.greater_is_better else "min"
    t = cfg.trainer
    ckpt = ModelCheckpoint(ckpt_dir, "best", monitor="val_metric", mode=mode, save_weights_only=True)
    callbacks = [ckpt] + ([EarlyStopping("val_metric", patience=t.patience, mode=mode)] if t.early_stopping else [])
    callbacks += build_monitors(cfg.get("monitors"))  # update/parameter ratio, dead ReLUs -> history.csv
    ddp = not isinstance(datasets["train"], ArrayDataset)  # finetunes; heads on features train on one device
    if ddp and n_devices(t) > 1:  # every device validates every row: one score for early stopping and checkpoints
        loaders["val"] = unsharded(loaders["val"])
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices if ddp else 1,
        strategy=fit_strategy(t) if ddp else "auto",
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        callbacks=callbacks,
        logger=TensorBoardLogger(model_dir / "tensorboard", name=f"fold{k}", version=""),
        deterministic=t.deterministic,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    net.train()  # transformers load encoders in eval mode; Net.train keeps only a frozen backbone in eval
    trainer.fit(net, loaders["train"], loaders["val"])
    net.load_state_dict(torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
    val, tick = predict_net(cfg, net, loaders["val"]), time.time()
    test, test_seconds = predict_net(cfg, net, loaders["test"]), time.time() - tick
    best = net.history[int(np.nanargmax([h["val_metric"] * (1 if mode == "max" else -1) for h in net.history]))]
    return {
        "val": val,
        "test": test,
        "history": net.history,
        "epochs": len(net.history),
        "best_epoch": best["epoch"],
        "seconds": time.time() - start,
        "test_seconds": test_seconds,  # predicting the test rows (benchmarks/bench_predict.py compares)
        "model": net,
    }


def predict_net(cfg, net: Net, data: DataLoader | Dataset) -> np.ndarray:
    """A torch model's predictions of every row of a loader (or dataset), in order, in the metric's units."""
    t = cfg.trainer
    if not isinstance(data, DataLoader):
        data = predict_loader(cfg, data)
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=1,
        precision=t.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return torch.cat(trainer.predict(net, data)).float().numpy()


def _features(ds: ArrayDataset) -> np.ndarray | sparse.csr_matrix:
    """Embeddings, TF-IDF and tabular features side by side; sparse (CSR) as soon as one part is."""
    parts = [ds.arrays[k] for k in ("emb", "tfidf", "tab") if k in ds.arrays]
    parts = [p if sparse.issparse(p) else p.numpy() for p in parts]
    if any(sparse.issparse(p) for p in parts):
        return sparse.hstack(parts, format="csr")
    return np.concatenate(parts, axis=1)


def _all_classes(est, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns for every class, also those absent from this fold's training rows (probability 0)."""
    full = np.zeros((len(proba), n_classes))
    full[:, np.asarray(est.classes_, dtype=int)] = proba
    return full


def estimator_spec(head, task: str):
    """`model.head.regressor` when given for regression (it replaces the estimator: LR -> Ridge), else
    `model.head.estimator`."""
    return head.regressor if task == "regression" and head.get("regressor") else head.estimator


def estimator_target(target: str, task: str) -> str:
    """The class actually trained: a ...Classifier becomes its ...Regressor twin for regression (and back), so one
    preset (HistGradientBoosting, LightGBM, XGBoost, CatBoost, RandomForest, ...) serves every task."""
    want, other = ("Regressor", "Classifier") if task == "regression" else ("Classifier", "Regressor")
    return target[: -len(other)] + want if target.endswith(other) else target


def sklearn_estimator(spec, task: str):
    """Instantiate an estimator spec as `estimator_target` names it for the task."""
    target = estimator_target(str(spec._target_), task)
    if target != spec._target_:
        log.info("task %s: using %s", task, target)
    try:
        est = hydra.utils.instantiate(spec, _target_=target)
    except InstantiationException as e:
        raise UserError(f"model.head.estimator {target} could not be built: {str(e).splitlines()[0]}") from e
    if is_classifier(est) if task == "regression" else is_regressor(est):
        want = "regressor" if task == "regression" else "classifier"
        raise UserError(f"model.head.estimator {target} does not fit a {task} task: pick a {want}")
    return est


# Early stopping on the fold's own validation rows (every training row still trains; choosing one integer, the
# round count, on the validation rows makes their OOF score a shade optimistic, as in every Kaggle GBM kernel).
# Per library: the preset's key that turns it on (with the patience), how fit takes the validation rows, and the
# boosting rounds the predictions then use.
EARLY_STOPPING = {
    "lightgbm": (
        "early_stopping_round",
        lambda xv, yv: {"eval_X": (xv,), "eval_y": (yv,)},  # LightGBM >= 4.7 (eval_set is deprecated)
        lambda e: e.best_iteration_,
    ),
    "xgboost": (
        "early_stopping_rounds",
        lambda xv, yv: {"eval_set": [(xv, yv)], "verbose": False},
        lambda e: e.best_iteration + 1,
    ),
    "catboost": ("early_stopping_rounds", lambda xv, yv: {"eval_set": (xv, yv)}, lambda e: e.get_best_iteration() + 1),
    "sklearn": ("early_stopping", lambda xv, yv: {"X_val": xv, "y_val": yv}, lambda e: e.n_iter_),  # HistGB
}


def _library(est) -> str:
    return type(est).__module__.split(".")[0]


def _stops_early(est) -> bool:
    lib = _library(est)
    if lib not in EARLY_STOPPING or (lib == "sklearn" and "X_val" not in inspect.signature(est.fit).parameters):
        return False
    value = est.get_params().get(EARLY_STOPPING[lib][0])
    return value is True if lib == "sklearn" else bool(value)  # HistGB's "auto" splits off its own rows


def _native_categoricals(est, cols: list[int], n_features: int) -> dict:
    """Tell the estimator which columns hold category codes: fit arguments (LightGBM, CatBoost) or its own
    parameters (XGBoost, HistGradientBoosting)."""
    lib = _library(est)
    if lib == "lightgbm":
        return {"categorical_feature": cols}
    if lib == "catboost":
        return {"cat_features": cols}
    if lib == "xgboost":
        types = ["c" if i in set(cols) else "q" for i in range(n_features)]
        est.set_params(enable_categorical=True, feature_types=types)
    elif "categorical_features" in est.get_params():
        est.set_params(categorical_features=cols)
    else:
        raise UserError(
            f"data.categorical_encoding=native: {type(est).__name__} cannot take categorical columns; "
            "use ordinal or onehot, or LightGBM, XGBoost, CatBoost or HistGradientBoosting"
        )
    return {}


def _categorical_columns(cfg, comp: Competition, ds: ArrayDataset, n_features: int) -> list[int]:
    """Positions of the native category codes in the head's input (the tabular block comes last)."""
    if "tab" not in ds.arrays or cfg.data.categorical_encoding != "native":
        return []
    explicit = cfg.data.get("feature_cols") is not None
    numeric, categorical = split_columns(comp.train, comp.feature_cols, explicit, report=False)
    offset = n_features - ds.arrays["tab"].shape[1]
    return [offset + i for i in categorical_positions(numeric, categorical, cfg.data.categorical_encoding)]


def _with_integer_codes(x: np.ndarray, cols: list[int]):
    """CatBoost reads categoricals from integer (or string) columns only."""
    frame = pd.DataFrame(x)
    frame[cols] = frame[cols].astype(np.int64)
    return frame


def _use_threads(est, threads: int) -> None:
    params = est.get_params()
    if "n_jobs" in params and params["n_jobs"] is None and type(est).__name__ != "LogisticRegression":
        est.set_params(n_jobs=threads)  # RandomForest, LightGBM, XGBoost, ... (LogisticRegression ignores it)
    elif _library(est) == "catboost" and params.get("thread_count") is None:
        est.set_params(thread_count=threads)  # CatBoost lists only the parameters it was given


def sklearn_inputs(est, ds: ArrayDataset, categorical: list[int]):
    """The estimator's input matrix for a dataset's rows (category codes as integers for CatBoost)."""
    x = _features(ds)
    return _with_integer_codes(x, categorical) if categorical and _library(est) == "catboost" else x


def predict_sklearn(est, comp: Competition, x) -> np.ndarray:
    """Values (regression) or one probability column per class of the competition."""
    if comp.task == "regression":
        return est.predict(x)
    return _all_classes(est, est.predict_proba(x), len(comp.classes))


def _fit(cfg, comp: Competition, est, datasets: dict) -> tuple[dict, int | None, list[int]]:
    """Fit on the fold's training rows (early-stopped on its validation rows where the estimator does that);
    returns the feature matrices (train, val, test), the boosting rounds used (None without early stopping) and
    the positions of native categorical columns."""
    n_features = _features(datasets["train"]).shape[1]
    cols = _categorical_columns(cfg, comp, datasets["train"], n_features)
    kwargs = _native_categoricals(est, cols, n_features) if cols else {}
    x = {p: sklearn_inputs(est, datasets[p], cols) for p in ("train", "val", "test")}
    y = {p: datasets[p].arrays["y"].numpy() for p in ("train", "val")}
    stops = _stops_early(est)
    if stops:
        kwargs |= EARLY_STOPPING[_library(est)][1](x["val"], y["val"])
    est.fit(x["train"], y["train"], **kwargs)
    return x, int(EARLY_STOPPING[_library(est)][2](est)) if stops else None, cols


def fit_sklearn(cfg, comp: Competition, datasets: dict, start: float) -> dict:
    """A scikit-learn (API) estimator as the head, on tabular features and/or frozen embeddings."""
    if not isinstance(datasets["train"], ArrayDataset):
        raise UserError("model.head.type=sklearn needs features: use model.finetune=frozen (or model=tabular)")
    est = sklearn_estimator(estimator_spec(cfg.model.head, comp.task), comp.task)
    threads = torch.get_num_threads()  # the job's share of the cores (`threads`, or cores / parallel jobs)
    _use_threads(est, threads)
    if comp.task != "regression" and not hasattr(est, "predict_proba"):
        raise UserError(
            f"model.head.estimator {type(est).__name__} has no predict_proba; pick a probabilistic "
            "classifier (e.g. LogisticRegression, or SVC with probability=true)"
        )
    with threadpool_limits(limits=threads):  # OpenMP estimators (HistGradientBoosting) and BLAS alike
        x, rounds, cols = _fit(cfg, comp, est, datasets)
        val, tick = predict_sklearn(est, comp, x["val"]), time.time()
        test, test_seconds = predict_sklearn(est, comp, x["test"]), time.time() - tick
    score = comp.metric(datasets["val"].arrays["y"].numpy(), val)
    hist = [{"epoch": 0, "train_loss": float("nan"), "val_loss": float("nan"), "val_metric": score}]
    if rounds is not None:
        hist[0]["best_iteration"] = rounds  # boosting rounds kept by early stopping (the cap is the preset's)
    return {
        "val": val,
        "test": test,
        "history": hist,
        "epochs": 1,
        "best_epoch": 0,
        "seconds": time.time() - start,
        "test_seconds": test_seconds,
        "model": est,
        "categorical": cols,
    }
