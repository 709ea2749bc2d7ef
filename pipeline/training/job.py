"""One job = one model spec over all folds, writing its model folder (format: pipeline/artifacts.py).

Each finished fold is saved atomically, so a killed job restarts at its first unfinished fold; metrics.json is
written last and marks the model complete (the ensemble stage reads only complete ones).
"""

import copy
import hashlib
import json
import logging
import os
import random
import re
import time

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf, open_dict

from pipeline.artifacts import ModelFolder, model_folder
from pipeline.choices import (
    BACKBONE_KINDS,
    CVScheme,
    Encoding,
    HeadType,
    HighCardinality,
    Scaling,
    TargetTransform,
    Task,
    is_frozen,
)
from pipeline.models.backbones import build_backbone
from pipeline.prepare import Prepared
from pipeline.training.estimators import estimator_spec, estimator_target, fit_sklearn
from pipeline.training.fold_inputs import fold_datasets
from pipeline.training.targets import target_transform, to_target

log = logging.getLogger(__name__)
# do not change results (devices: each takes batch_size / devices rows, the global batch stays)
# not in a model's id: they change its predictions at most by float rounding (onnx: ~1e-6 in frozen embeddings; the
# fold models record the engine, and predict embeds with the same)
COSMETIC = ("progress_bar", "num_workers", "accelerator", "predict_batch_size", "devices", "strategy", "onnx")
# Feature preprocessing that a model preset may choose for itself (`model.<key>`; null: the data's), since a preset
# cannot set keys of the data group: CatBoost wants native categoricals, the MLP clipped z-scores. With the
# data's defaults (the values below), as data configs without the key have them.
PRESET_DATA_KEYS = {"categorical_encoding": Encoding.ONEHOT, "numeric_scaling": Scaling.STANDARD}
# Keys that came after models were trained with ids of their own: at these values they change nothing, so they stay
# out of the spec that an id hashes, and every model trained before them keeps its id (tests/test_model_ids.py pins
# some). A new spec key joins this table with the value that behaves as before.
ID_NEUTRAL = {
    ("model", "target_transform"): TargetTransform.NONE,
    ("model", "sparse_input"): False,
    ("data", "numeric_scaling"): Scaling.STANDARD,
    ("data", "datetime_cols"): "auto",
    ("data", "high_card_encoding"): HighCardinality.NONE,
    ("data", "high_card_min_levels"): 50,
    ("data", "text_stats"): False,
    ("model", "mixup"): 0.0,
    ("model", "cutmix"): 0.0,
    ("trainer", "ema"): False,
    ("trainer", "ema_decay"): 0.999,
    ("trainer", "lr_find"): False,
}

NEW_DATA_KEYS = ("datetime_cols", "high_card_encoding", "high_card_min_levels", "text_stats")


def data_choice(cfg, key: str) -> str:
    """The value of `data.<key>` a job uses: the model preset's own `model.<key>` when set, else the data's."""
    return cfg.model.get(key) or cfg.data.get(key, PRESET_DATA_KEYS[key])


def encoding(cfg) -> str:
    return data_choice(cfg, "categorical_encoding")


def resolved(cfg):
    """The config a job trains and saves: the data keys a model preset chose for itself, set in `data`."""
    chosen = {k: data_choice(cfg, k) for k in PRESET_DATA_KEYS}
    changed = {k: v for k, v in chosen.items() if cfg.data.get(k, PRESET_DATA_KEYS[k]) != v}
    for k, v in changed.items():
        if cfg.data.get(k, PRESET_DATA_KEYS[k]) != PRESET_DATA_KEYS[k]:  # the user's own choice is replaced
            log.warning(
                "model.%s=%s replaces data.%s=%s (set model.%s=null to use the data's)", k, v, k, cfg.data[k], k
            )
    if not changed:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg.data):  # a data config may predate the key
        cfg.data.update(changed)
    return cfg


def _model_spec(cfg) -> dict:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    for key in PRESET_DATA_KEYS:  # in the spec as the data's value, whichever group set it
        model.pop(key, None)
    return model


def spec(cfg) -> dict:
    """Everything that determines a model's predictions (besides the data and folds)."""
    trainer = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in COSMETIC}
    keys = ("feature_cols", "rare_min_frequency", "max_length", *NEW_DATA_KEYS)
    data = {k: cfg.data.get(k, ID_NEUTRAL[("data", k)] if k in NEW_DATA_KEYS else None) for k in keys}
    data["categorical_encoding"] = encoding(cfg)
    data["numeric_scaling"] = data_choice(cfg, "numeric_scaling")
    return drop_id_neutral(
        {
            "model": _model_spec(cfg),
            "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
            "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True),
            "trainer": trainer,
            "data": OmegaConf.to_container(OmegaConf.create(data)),
            "seed": cfg.seed,
        }
    )


def drop_id_neutral(spec: dict) -> dict:
    """The spec without the keys that hold their ID_NEUTRAL default, in place."""
    for (group, key), default in ID_NEUTRAL.items():
        if key in spec[group] and spec[group][key] == default:
            del spec[group][key]
    return spec


def head_name(cfg, task: str | None = None) -> str:
    """The head as trained: for scikit-learn heads the estimator class the task gets (LGBMRegressor for a
    regression run of a ...Classifier preset), once the task is known (`task`, or a `data.task` other than auto)."""
    h = cfg.model.head
    if h.type == HeadType.LINEAR:
        return "linear"
    if h.type != HeadType.SKLEARN:
        return "mlp" + "x".join(map(str, h.hidden))
    task = task or (cfg.data.get("task") if cfg.data.get("task", Task.AUTO) != Task.AUTO else None)
    target = str(estimator_spec(h, task)._target_) if task else str(h.estimator._target_)
    return (estimator_target(target, task) if task else target).rsplit(".", 1)[-1].lower()


def model_id(cfg, task: str | None = None) -> str:
    """Readable and unique: backbone, finetune mode, head (+ a categorical encoding other than onehot and a target
    transform), seed, and a hash of the whole spec."""
    m = cfg.model
    digest = hashlib.sha256(json.dumps(spec(cfg), sort_keys=True).encode()).hexdigest()[:6]
    if m.kind not in BACKBONE_KINDS:  # no pretrained backbone to name
        base = m.kind
    else:
        name = m.backbone.name.removeprefix("pkg://").split("/")[0]
        base = f"{name}-{m.finetune}"
    head = head_name(cfg, task)
    if m.kind not in BACKBONE_KINDS and encoding(cfg) != Encoding.ONEHOT:
        head += f"-{encoding(cfg)}"
    if m.get("target_transform", TargetTransform.NONE) != TargetTransform.NONE:
        head += f"-{m.target_transform}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{base}-{head}-s{cfg.seed}-{digest}")


def fold_rows(folds: np.ndarray, meta: dict | None = None) -> list[tuple[int, dict]]:
    """(k, {"train": rows, "val": rows}) per fold; the -1 rows (holdout, time) always train. Time-ordered folds
    (the scheme in folds.json's `meta`) train on the earlier folds only: an expanding window."""
    earlier = bool(meta) and meta["cv"]["scheme"] == CVScheme.TIME
    return [
        (int(k), {"train": np.flatnonzero(folds < k if earlier else folds != k), "val": np.flatnonzero(folds == k)})
        for k in sorted(set(folds.tolist()) - {-1})
    ]


def seed_everything(seed: int) -> None:
    """Lightning's `seed_everything(seed, workers=True)`, without importing Lightning: the seeds of Python, numpy and
    torch, and the variables that seed its data-loader workers."""
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PL_SEED_WORKERS"] = "1"


def fit_fold(cfg, comp, backbone, inputs, k: int, path, y_scale: tuple[float, float]) -> dict:
    """One fold's fit: an sklearn head directly, a torch head through Lightning, imported only then (it imports
    torchmetrics, torchvision and transformers: most of a tabular job's start-up)."""
    if cfg.model.head.type == HeadType.SKLEARN:
        return fit_sklearn(cfg, comp, inputs.datasets, time.time())
    from pipeline.training.loop import train_fold

    return train_fold(cfg, comp, backbone, inputs.datasets, inputs.in_dim, k, path, y_scale)


def run_folds(cfg, prep: Prepared, folder: ModelFolder) -> list[tuple[int, dict, dict]]:
    """Train (or reload) every fold; returns (k, rows, result) per fold."""
    comp, out, shared = prep.comp, [], None
    forward, inverse = target_transform(cfg, comp)
    y = forward(comp.y.astype(float)) if comp.task == Task.REGRESSION else comp.y  # what the models learn
    trains_backbone = cfg.model.kind in BACKBONE_KINDS and not is_frozen(cfg.model)
    for k, rows in fold_rows(prep.folds, prep.folds_meta):
        res = folder.read_fold(k, prep.folds_meta["folds_hash"])
        if res is not None:
            log.info("fold %d: done earlier (%s), reusing", k, folder.fold(k))
        else:
            seed_everything(cfg.seed * 1000 + k)
            if trains_backbone or shared is None:  # finetuning starts every fold from the pretrained weights
                shared = build_backbone(cfg.model.kind, cfg.model.backbone)
            backbone = shared
            inputs = fold_datasets(comp, backbone, cfg, rows, y, prep.out_dir / "cache")
            y_train = y[rows["train"]].astype(float)
            y_scale = (float(y_train.mean()), float(y_train.std() or 1.0)) if comp.task == Task.REGRESSION else (0, 1)
            res = fit_fold(cfg, comp, backbone, inputs, k, folder.path, y_scale)
            res["test_seconds"] += inputs.test_seconds  # the test rows' features count as predicting them
            y_range = (float(y_train.min()), float(y_train.max())) if comp.task == Task.REGRESSION else None
            res |= {p: to_target(res[p], y_range, inverse) for p in ("val", "test")}
            model = res.pop("model")
            state = inputs.fitted | {"y_scale": list(y_scale), "y_range": y_range}
            if isinstance(model, torch.nn.Module):
                folder.write_fold_model(k, state, model.state_dict())
            else:
                folder.write_fold_model(k, state | {"estimator": model, "categorical": res.pop("categorical")}, None)
            folder.write_fold(k, res, prep.folds_meta["folds_hash"])  # last: marks the fold done
            score = comp.metric(comp.y[rows["val"]], res["val"])
            log.info(
                "fold %d: %s %.5f (%d epochs, %.0f s)",
                k,
                comp.metric.name,
                score,
                res["epochs"],
                res["seconds"],
            )
        out.append((k, rows, res))
    return out


def prediction_frame(comp, ids, pred: np.ndarray) -> pd.DataFrame:
    """The id column, then one probability column per class label, or `prediction` for regression."""
    if comp.task == Task.REGRESSION:
        cols = {"prediction": pred}
    else:
        cols = {str(c): pred[:, i] for i, c in enumerate(comp.classes)}
    return pd.DataFrame({comp.id_col: np.asarray(ids), **cols})


def write_results(cfg, prep: Prepared, folder: ModelFolder, results: list, seconds: float) -> dict:
    """The fold results joined into the member's oof/test predictions, history and metrics."""
    comp = prep.comp
    width = () if comp.task == Task.REGRESSION else (len(comp.classes),)
    oof = np.full((len(comp.y), *width), np.nan)
    for _, rows, res in results:
        oof[rows["val"]] = res["val"]
    test = np.mean([res["test"] for _, _, res in results], axis=0)
    hist = pd.DataFrame([{"fold": k, **h} for k, _, res in results for h in res["history"]])
    scores = [comp.metric(comp.y[rows["val"]], res["val"]) for _, rows, res in results]
    valid = ~np.isnan(oof if oof.ndim == 1 else oof[:, 0])
    metrics = {
        "model_id": folder.name,
        "metric": comp.metric.name,
        "greater_is_better": comp.metric.greater_is_better,
        "cv_score": comp.metric(comp.y[valid], oof[valid]),
        "cv_mean": float(np.mean(scores)),
        "cv_std": float(np.std(scores)),
        "fold_scores": scores,
        "epochs": [res["epochs"] for _, _, res in results],
        "best_epochs": [res["best_epoch"] for _, _, res in results],
        "seconds": seconds,
        "test_seconds": sum(res.get("test_seconds") or 0.0 for _, _, res in results),  # predicting the test rows
        "task": comp.task,
        "classes": comp.classes,
        "folds_hash": prep.folds_meta["folds_hash"],
        "data_hash": comp.data_hash,
        "kind": cfg.model.kind,
        "finetune": cfg.model.get("finetune"),
        "seed": cfg.seed,
    }
    oof_df = prediction_frame(comp, comp.train[comp.id_col], oof)
    folder.write_results(oof_df, prediction_frame(comp, comp.test[comp.id_col], test), hist, metrics)
    return metrics


def train_job(cfg, prep: Prepared) -> dict:
    """Train one model spec over all folds (resuming finished folds) and write its folder."""
    cfg = resolved(cfg)
    folder = model_folder(prep.out_dir, model_id(cfg, prep.comp.task))
    if folder.is_complete(prep.folds_meta["folds_hash"]) and not cfg.retrain:
        log.info("model %s: complete with this config and these folds, skipping (retrain=true to redo)", folder.name)
        return folder.read_metrics()
    if cfg.retrain:
        for f in folder.fold_files():
            f.unlink()
    start = time.time()
    folder.write_config(cfg)
    log.info("model %s: training %d folds -> %s", folder.name, len(fold_rows(prep.folds, prep.folds_meta)), folder.path)
    results = run_folds(cfg, prep, folder)
    metrics = write_results(cfg, prep, folder, results, time.time() - start)
    log.info(
        "model %s: CV %s %.5f (mean %.5f +- %.5f over folds)",
        folder.name,
        metrics["metric"],
        metrics["cv_score"],
        metrics["cv_mean"],
        metrics["cv_std"],
    )
    return metrics
