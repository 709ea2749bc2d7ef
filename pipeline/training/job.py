"""One job = one model spec over all folds, writing outputs/<name>/models/<model_id>/.

Each finished fold is saved atomically (folds/fold<k>.npz), so a killed job restarts at its first unfinished
fold; metrics.json is written last and marks the model complete (the ensemble stage reads only complete ones).
"""

import hashlib
import io
import json
import logging
import re
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.artifacts import atomic_write, read_json, write_csv, write_json
from pipeline.models.backbones import build_backbone
from pipeline.prepare import Prepared
from pipeline.training.inputs import fold_datasets
from pipeline.training.loop import train_fold

log = logging.getLogger(__name__)
COSMETIC = ("progress_bar", "num_workers", "accelerator", "predict_batch_size")  # do not change results


def spec(cfg) -> dict:
    """Everything that determines a model's predictions (besides the data and folds)."""
    trainer = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in COSMETIC}
    data = {k: cfg.data.get(k) for k in ("feature_cols", "categorical_encoding", "rare_min_frequency", "max_length")}
    if cfg.data.get("numeric_scaling", "standard") != "standard":  # added later: the default keeps older ids
        data["numeric_scaling"] = cfg.data.numeric_scaling
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True),
        "trainer": trainer,
        "data": OmegaConf.to_container(OmegaConf.create(data)),
        "seed": cfg.seed,
    }


def model_id(cfg) -> str:
    """Readable and unique: backbone, finetune mode, head, seed, and a hash of the whole spec."""
    m = cfg.model
    digest = hashlib.sha256(json.dumps(spec(cfg), sort_keys=True).encode()).hexdigest()[:6]
    if m.kind == "tabular":
        base = "tabular"
    else:
        name = m.backbone.name.removeprefix("pkg://").split("/")[0]
        base = f"{name}-{m.finetune}"
    h = m.head
    head = (
        h.estimator._target_.rsplit(".", 1)[-1].lower()
        if h.type == "sklearn"
        else "linear"
        if h.type == "linear"
        else "mlp" + "x".join(map(str, h.hidden))
    )
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{base}-{head}-s{cfg.seed}-{digest}")


def fold_rows(folds: np.ndarray) -> list[tuple[int, dict]]:
    """(k, {"train": rows, "val": rows}) per fold; holdout's -1 rows always train."""
    return [
        (int(k), {"train": np.flatnonzero(folds != k), "val": np.flatnonzero(folds == k)})
        for k in sorted(set(folds.tolist()) - {-1})
    ]


def _save_fold(path: Path, res: dict, folds_hash: str) -> None:
    meta = {k: res[k] for k in ("history", "epochs", "best_epoch", "seconds")} | {"folds_hash": folds_hash}

    def write(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, val=res["val"], test=res["test"], meta=np.array(json.dumps(meta)))
        tmp.write_bytes(buf.getvalue())

    atomic_write(path, write)


def _load_fold(path: Path, folds_hash: str) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("folds_hash") != folds_hash:
            return None
        return {"val": z["val"], "test": z["test"], **meta}


def is_complete(model_dir: Path, folds_hash: str) -> bool:
    m = model_dir / "metrics.json"
    return m.is_file() and read_json(m).get("folds_hash") == folds_hash


def run_folds(cfg, prep: Prepared, model_dir: Path) -> list[tuple[int, dict, dict]]:
    """Train (or reload) every fold; returns (k, rows, result) per fold."""
    comp, out, shared = prep.comp, [], None
    y = comp.y
    trains_backbone = cfg.model.kind != "tabular" and cfg.model.finetune != "frozen"
    for k, rows in fold_rows(prep.folds):
        path = model_dir / "folds" / f"fold{k}.npz"
        res = _load_fold(path, prep.folds_meta["folds_hash"])
        if res is not None:
            log.info("fold %d: done earlier (%s), reusing", k, path)
        else:
            L.seed_everything(cfg.seed * 1000 + k, workers=True, verbose=False)
            if trains_backbone or shared is None:  # finetuning starts every fold from the pretrained weights
                shared = build_backbone(cfg.model.kind, cfg.model.backbone)
            backbone = shared
            datasets, in_dim = fold_datasets(comp, backbone, cfg, rows, y, prep.out_dir / "cache")
            y_train = y[rows["train"]].astype(float)
            y_scale = (float(y_train.mean()), float(y_train.std() or 1.0)) if comp.task == "regression" else (0, 1)
            res = train_fold(cfg, comp, backbone, datasets, in_dim, k, model_dir, y_scale)
            _save_fold(path, res, prep.folds_meta["folds_hash"])
            score = comp.metric(y[rows["val"]], res["val"])
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
    cols = (
        {"prediction": pred} if comp.task == "regression" else {str(c): pred[:, i] for i, c in enumerate(comp.classes)}
    )
    return pd.DataFrame({comp.id_col: np.asarray(ids), **cols})


def write_outputs(cfg, prep: Prepared, model_dir: Path, mid: str, results: list, seconds: float) -> dict:
    """oof.csv, test.csv, history.csv, then metrics.json last (it marks the model complete)."""
    comp = prep.comp
    width = () if comp.task == "regression" else (len(comp.classes),)
    oof = np.full((len(comp.y), *width), np.nan)
    for _, rows, res in results:
        oof[rows["val"]] = res["val"]
    test = np.mean([res["test"] for _, _, res in results], axis=0)
    write_csv(prediction_frame(comp, comp.train[comp.id_col], oof), model_dir / "oof.csv")
    write_csv(prediction_frame(comp, comp.test[comp.id_col], test), model_dir / "test.csv")
    hist = pd.DataFrame([{"fold": k, **h} for k, _, res in results for h in res["history"]])
    write_csv(hist, model_dir / "history.csv")
    scores = [comp.metric(comp.y[rows["val"]], res["val"]) for _, rows, res in results]
    valid = ~np.isnan(oof if oof.ndim == 1 else oof[:, 0])
    metrics = {
        "model_id": mid,
        "metric": comp.metric.name,
        "greater_is_better": comp.metric.greater_is_better,
        "cv_score": comp.metric(comp.y[valid], oof[valid]),
        "cv_mean": float(np.mean(scores)),
        "cv_std": float(np.std(scores)),
        "fold_scores": scores,
        "epochs": [res["epochs"] for _, _, res in results],
        "best_epochs": [res["best_epoch"] for _, _, res in results],
        "seconds": seconds,
        "task": comp.task,
        "classes": comp.classes,
        "folds_hash": prep.folds_meta["folds_hash"],
        "data_hash": comp.data_hash,
        "kind": cfg.model.kind,
        "finetune": cfg.model.get("finetune"),
        "seed": cfg.seed,
    }
    write_json(metrics, model_dir / "metrics.json")
    return metrics


def train_job(cfg, prep: Prepared) -> dict:
    """Train one model spec over all folds (resuming finished folds) and write its folder."""
    mid = model_id(cfg)
    model_dir = prep.out_dir / "models" / mid
    if is_complete(model_dir, prep.folds_meta["folds_hash"]) and not cfg.retrain:
        log.info("model %s: complete with this config and these folds, skipping (retrain=true to redo)", mid)
        return read_json(model_dir / "metrics.json")
    if cfg.retrain:
        for f in (model_dir / "folds").glob("fold*.npz"):
            f.unlink()
    start = time.time()
    atomic_write(model_dir / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
    log.info("model %s: training %d folds -> %s", mid, len(fold_rows(prep.folds)), model_dir)
    results = run_folds(cfg, prep, model_dir)
    metrics = write_outputs(cfg, prep, model_dir, mid, results, time.time() - start)
    log.info(
        "model %s: CV %s %.5f (mean %.5f +- %.5f over folds)",
        mid,
        metrics["metric"],
        metrics["cv_score"],
        metrics["cv_mean"],
        metrics["cv_std"],
    )
    return metrics
