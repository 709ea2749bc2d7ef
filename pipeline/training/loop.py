"""One fold: fit the model on the fold's training rows with early stopping, restore the best checkpoint,
predict the fold's validation rows (out of fold) and the test rows."""

import logging
import shutil
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.base import is_classifier, is_regressor
from threadpoolctl import threadpool_limits

from pipeline.data.contract import Competition
from pipeline.errors import UserError
from pipeline.models.backbones import Backbone
from pipeline.models.heads import build_head
from pipeline.models.module import Net
from pipeline.training.inputs import ArrayDataset, array_loader, loader
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
        bs = len(datasets["train"]) if full else t.batch_size
        return {
            "train": array_loader(datasets["train"].arrays, bs, True),
            **{k: array_loader(datasets[k].arrays, t.predict_batch_size, False) for k in ("val", "test")},
        }
    return {
        "train": loader(datasets["train"], t.batch_size, True, t.num_workers),
        **{k: loader(datasets[k], t.predict_batch_size, False, t.num_workers) for k in ("val", "test")},
    }


def build_net(cfg, comp: Competition, backbone: Backbone | None, in_dim: int) -> Net:
    m = cfg.model
    loss = build_loss(m.loss, comp.task, m.label_smoothing)
    head = build_head(m.head, in_dim, n_outputs(comp, loss))
    trainable = backbone.module if backbone is not None and m.finetune != "frozen" else None
    return Net(
        head,
        loss,
        comp.metric,
        hydra.utils.instantiate(cfg.optimizer),
        cfg.scheduler,
        backbone=trainable,
        backbone_lr_mult=m.backbone_lr_mult,
        probe_epochs=m.probe_epochs if m.finetune == "probe_then_full" else 0,
        l1=m.l1,
        tta=m.tta,
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
    if cfg.model.head.type == "sklearn":
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
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=1,
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
    predict = L.Trainer(
        accelerator=t.accelerator,
        devices=1,
        precision=t.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    val, test = (torch.cat(predict.predict(net, loaders[p])).float().numpy() for p in ("val", "test"))
    best = net.history[int(np.nanargmax([h["val_metric"] * (1 if mode == "max" else -1) for h in net.history]))]
    return {
        "val": val,
        "test": test,
        "history": net.history,
        "epochs": len(net.history),
        "best_epoch": best["epoch"],
        "seconds": time.time() - start,
    }


def _features(ds: ArrayDataset) -> np.ndarray:
    return np.concatenate([ds.arrays[k].numpy() for k in ("emb", "tab") if k in ds.arrays], axis=1)


def _all_classes(est, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns for every class, also those absent from this fold's training rows (probability 0)."""
    full = np.zeros((len(proba), n_classes))
    full[:, np.asarray(est.classes_, dtype=int)] = proba
    return full


def sklearn_estimator(spec, task: str):
    """Instantiate `model.head.estimator`, swapping a ...Classifier for its ...Regressor twin (and back) when the
    task needs it, so one preset (HistGradientBoosting, LightGBM, RandomForest, ...) serves every task."""
    target = str(spec._target_)
    want, other = ("Regressor", "Classifier") if task == "regression" else ("Classifier", "Regressor")
    if target.endswith(other):
        target = target[: -len(other)] + want
        log.info("task %s: using %s", task, target)
    try:
        est = hydra.utils.instantiate(spec, _target_=target)
    except InstantiationException as e:
        raise UserError(f"model.head.estimator {target} could not be built: {str(e).splitlines()[0]}") from e
    if is_classifier(est) if task == "regression" else is_regressor(est):
        raise UserError(f"model.head.estimator {target} does not fit a {task} task: pick a {want.lower()}")
    return est


def fit_sklearn(cfg, comp: Competition, datasets: dict, start: float) -> dict:
    """A scikit-learn estimator as the head, on tabular features and/or frozen embeddings."""
    if not isinstance(datasets["train"], ArrayDataset):
        raise UserError("model.head.type=sklearn needs features: use model.finetune=frozen (or model=tabular)")
    est = sklearn_estimator(cfg.model.head.estimator, comp.task)
    threads = torch.get_num_threads()  # the job's share of the cores (`threads`, or cores / parallel jobs)
    if "n_jobs" in est.get_params() and est.get_params()["n_jobs"] is None:
        est.set_params(n_jobs=threads)  # RandomForest, LightGBM, ...
    if comp.task != "regression" and not hasattr(est, "predict_proba"):
        raise UserError(
            f"model.head.estimator {type(est).__name__} has no predict_proba; pick a probabilistic "
            "classifier (e.g. LogisticRegression, or SVC with probability=true)"
        )
    with threadpool_limits(limits=threads):  # OpenMP estimators (HistGradientBoosting) and BLAS alike
        est.fit(_features(datasets["train"]), datasets["train"].arrays["y"].numpy())
        if comp.task == "regression":
            val, test = (est.predict(_features(datasets[p])) for p in ("val", "test"))
        else:
            val, test = (
                _all_classes(est, est.predict_proba(_features(datasets[p])), len(comp.classes)) for p in ("val", "test")
            )
    score = comp.metric(datasets["val"].arrays["y"].numpy(), val)
    hist = [{"epoch": 0, "train_loss": float("nan"), "val_loss": float("nan"), "val_metric": score}]
    return {
        "val": val,
        "test": test,
        "history": hist,
        "epochs": 1,
        "best_epoch": 0,
        "seconds": time.time() - start,
    }
