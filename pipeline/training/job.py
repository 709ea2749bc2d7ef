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
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf, open_dict

from pipeline.artifacts import ModelFolder, model_folder
from pipeline.choices import (
    BACKBONE_KINDS,
    REGRESSIONS,
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
from pipeline.training.distill import check_distill, run_student
from pipeline.training.estimators import estimator_spec, estimator_target, fit_sklearn
from pipeline.training.fold_inputs import fold_datasets
from pipeline.training.pseudo import check_pseudo, pseudo_labels, with_pseudo
from pipeline.training.refit import check_refit, refit_full
from pipeline.training.targets import target_transform, to_target
from pipeline.training.teacher import teacher_digest

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
    ("model", "refit_full"): False,
    ("data", "numeric_scaling"): Scaling.STANDARD,
    ("data", "datetime_cols"): "auto",
    ("data", "high_card_encoding"): HighCardinality.NONE,
    ("data", "high_card_min_levels"): 50,
    ("data", "text_stats"): False,
    ("model", "mixup"): 0.0,
    ("model", "cutmix"): 0.0,
    ("model", "train_sizes"): [],
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
    """Everything that determines a model's predictions (besides the data and folds): with a teacher (model=distill,
    pseudo_labels), the saved ensemble's digest and the pseudo-labels' threshold too."""
    trainer = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in COSMETIC}
    keys = ("feature_cols", "rare_min_frequency", "max_length", *NEW_DATA_KEYS)
    data = {k: cfg.data.get(k, ID_NEUTRAL[("data", k)] if k in NEW_DATA_KEYS else None) for k in keys}
    data["categorical_encoding"] = encoding(cfg)
    data["numeric_scaling"] = data_choice(cfg, "numeric_scaling")
    taught = {k: cfg[k] for k in ("teacher", "pseudo_labels") if cfg.get(k) is not None}
    return drop_id_neutral(
        taught
        | {
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


def backbone_label(name: str) -> str:
    """A backbone as a model id names it: a package's name (`pkg://<package>/...`), a local path's last part
    (`weights/all-mpnet-base-v2`), else a hub name's first part."""
    if name.startswith("pkg://"):
        return name.removeprefix("pkg://").split("/")[0]
    if name.startswith(("/", ".")) or Path(name).exists():
        return Path(name).name
    return name.split("/")[0]


def model_id(cfg, task: str | None = None) -> str:
    """Readable and unique: backbone, finetune mode, head (+ a categorical encoding other than onehot and a target
    transform), seed, and a hash of the whole spec."""
    m = cfg.model
    digest = hashlib.sha256(json.dumps(spec(cfg), sort_keys=True).encode()).hexdigest()[:6]
    if m.kind not in BACKBONE_KINDS:  # no pretrained backbone to name
        base = m.kind
    else:
        base = f"{backbone_label(m.backbone.name)}-{m.finetune}"
    head = head_name(cfg, task)
    if m.kind not in BACKBONE_KINDS and encoding(cfg) != Encoding.ONEHOT:
        head += f"-{encoding(cfg)}"
    if m.get("target_transform", TargetTransform.NONE) != TargetTransform.NONE:
        head += f"-{m.target_transform}"
    if m.get("refit_full", False):
        head += "-refit"
    if m.get("distill", False):
        head = f"distill-{head_name(cfg, Task.REGRESSION)}"  # regressors on the teacher's predictions
    if cfg.get("pseudo_labels") is not None:
        head += "-pseudo"
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


def target_scale(y_train: np.ndarray) -> tuple:
    """(mean, std) of the fold's training targets, per target when there are several (a constant one: std 1)."""
    std = y_train.std(0)
    return y_train.mean(0).tolist(), np.where(std > 0, std, 1.0).tolist()


def fit_model(
    cfg, prep: Prepared, folder: ModelFolder, rows: dict, k, backbone, pseudo: tuple | None = None
) -> tuple[dict, dict, dict | None]:
    """One model fitted on `rows["train"]` (early-stopped on and scored on `rows["val"]`) and on `pseudo`'s
    pseudo-labelled test rows: its result, predictions in the target's units, and what predicting new rows needs:
    (fitted state, torch weights or None)."""
    comp = prep.comp
    forward, inverse = target_transform(cfg, comp)
    y = forward(comp.y.astype(float)) if comp.task == Task.REGRESSION else comp.y  # what the models learn
    inputs = fold_datasets(comp, backbone, cfg, rows, y, prep.out_dir / "cache")
    if pseudo is not None:
        inputs.datasets["train"] = with_pseudo(inputs.datasets, *pseudo)
    y_train = y[rows["train"]].astype(float)
    y_scale = target_scale(y_train) if comp.task in REGRESSIONS else (0, 1)
    res = fit_fold(cfg, comp, backbone, inputs, k, folder.path, y_scale)
    res["test_seconds"] += inputs.test_seconds  # the test rows' features count as predicting them
    y_range = (y_train.min(0).tolist(), y_train.max(0).tolist()) if comp.task in REGRESSIONS else None
    res |= {p: to_target(res[p], y_range, inverse) for p in ("val", "test")}
    model = res.pop("model")
    state = inputs.fitted | {"y_scale": list(y_scale), "y_range": y_range}
    if isinstance(model, torch.nn.Module):
        return res, state, model.state_dict()
    return res, state | {"estimator": model, "categorical": res.pop("categorical")}, None


def run_folds(cfg, prep: Prepared, folder: ModelFolder) -> list[tuple[int, dict, dict]]:
    """Train (or reload) every fold; returns (k, rows, result) per fold."""
    comp, out, shared, pseudo = prep.comp, [], None, None
    trains_backbone = cfg.model.kind in BACKBONE_KINDS and not is_frozen(cfg.model)
    for k, rows in fold_rows(prep.folds, prep.folds_meta):
        res = folder.read_fold(k, prep.folds_meta["folds_hash"])
        if res is not None:
            log.info("fold %d: done earlier (%s), reusing", k, folder.fold(k))
        else:
            seed_everything(cfg.seed * 1000 + k)
            if trains_backbone or shared is None:  # finetuning starts every fold from the pretrained weights
                shared = build_backbone(cfg.model.kind, cfg.model.backbone)
            if cfg.get("pseudo_labels") is not None and pseudo is None:
                pseudo = pseudo_labels(cfg, prep)
            res, state, weights = fit_model(cfg, prep, folder, rows, k, shared, None if pseudo is None else pseudo[k])
            folder.write_fold_model(k, state, weights)
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


def refit(cfg, prep: Prepared, folder: ModelFolder, results: list) -> tuple[np.ndarray | None, dict | None]:
    """With `model.refit_full`, the test predictions of one model refitted on every row (`refit.py`), and what
    metrics.json records of it; else (None, None): the fold models' average predicts the test rows."""
    if not cfg.model.get("refit_full", False):
        return None, None

    def fit_all(sized_cfg, rows):
        seed_everything(cfg.seed * 1000 + len(results))  # a seed no fold used
        backbone = build_backbone(sized_cfg.model.kind, sized_cfg.model.backbone)
        return fit_model(sized_cfg, prep, folder, rows, "refit", backbone)

    return refit_full(cfg, prep, folder, results, fit_all)


def prediction_frame(comp, ids, pred: np.ndarray) -> pd.DataFrame:
    """The id column, then one probability column per class label, or `prediction` for regression."""
    if comp.task == Task.REGRESSION:
        cols = {"prediction": pred}
    else:
        cols = {str(c): pred[:, i] for i, c in enumerate(comp.classes)}
    return pd.DataFrame({comp.id_col: np.asarray(ids), **cols})


def write_results(
    cfg, prep: Prepared, folder: ModelFolder, results: list, seconds: float, refitted: tuple = (None, None)
) -> dict:
    """The fold results joined into the member's oof/test predictions, history and metrics. `refitted`: the test
    predictions of a model refitted on every row, which replace the fold models' average, and its record."""
    comp = prep.comp
    width = () if comp.task == Task.REGRESSION else (len(comp.classes),)
    oof = np.full((len(comp.y), *width), np.nan)
    for _, rows, res in results:
        oof[rows["val"]] = res["val"]
    test = np.mean([res["test"] for _, _, res in results], axis=0) if refitted[0] is None else refitted[0]
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
        **({"refit_full": refitted[1]} if refitted[1] else {}),
    }
    oof_df = prediction_frame(comp, comp.train[comp.id_col], oof)
    folder.write_results(oof_df, prediction_frame(comp, comp.test[comp.id_col], test), hist, metrics)
    return metrics


def with_teacher(cfg, prep: Prepared):
    """A member that learns from the saved ensemble (model.distill, pseudo_labels) records its digest as `teacher`:
    in the spec, so that a new ensemble makes a new member rather than reusing one taught by the old."""
    if not (cfg.model.get("distill", False) or cfg.get("pseudo_labels") is not None):
        return cfg
    if cfg.get("pseudo_labels") is not None:
        check_pseudo(cfg, prep.comp.task)
    if cfg.model.get("distill", False):
        check_distill(prep.comp.task)

    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.teacher = teacher_digest(prep.out_dir)
    return cfg


def train_job(cfg, prep: Prepared) -> dict:
    """Train one model spec over all folds (resuming finished folds) and write its folder."""
    cfg = with_teacher(resolved(cfg), prep)
    folder = model_folder(prep.out_dir, model_id(cfg, prep.comp.task))
    if folder.is_complete(prep.folds_meta["folds_hash"]) and not cfg.retrain:
        log.info("model %s: complete with this config and these folds, skipping (retrain=true to redo)", folder.name)
        return folder.read_metrics()
    if cfg.retrain:
        for f in folder.fold_files():
            f.unlink()
    if cfg.model.get("refit_full", False):
        check_refit(cfg, prep.comp.task)  # before any fold trains
    start = time.time()
    folder.write_config(cfg)
    log.info("model %s: training %d folds -> %s", folder.name, len(fold_rows(prep.folds, prep.folds_meta)), folder.path)
    if cfg.model.get("distill", False):
        results = run_student(cfg, prep, folder, fold_rows(prep.folds, prep.folds_meta))
    else:
        results = run_folds(cfg, prep, folder)
    metrics = write_results(cfg, prep, folder, results, time.time() - start, refit(cfg, prep, folder, results))
    log.info(
        "model %s: CV %s %.5f (mean %.5f +- %.5f over folds)",
        folder.name,
        metrics["metric"],
        metrics["cv_score"],
        metrics["cv_mean"],
        metrics["cv_std"],
    )
    return metrics
