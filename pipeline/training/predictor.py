"""Predict new rows with a trained member: each fold model, through its own fitted preprocessing, on the rows, then
averaged over the folds as training averaged its test predictions. Nothing is fitted here."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from pipeline.artifacts import ModelFolder
from pipeline.choices import BACKBONE_KINDS, Finetune, TargetTransform
from pipeline.data.contract import Competition
from pipeline.metrics import get_metric
from pipeline.models.backbones import build_backbone
from pipeline.training.inputs import test_dataset, test_embeddings
from pipeline.training.job import TARGET_TRANSFORMS, to_target
from pipeline.training.loop import build_net, predict_net, predict_sklearn, sklearn_inputs

log = logging.getLogger(__name__)


def member_competition(info: dict, data, test: pd.DataFrame, image_dir: str | None = None) -> Competition:
    """The competition as a member's fold models read it: competition.json's task and classes, the member's data
    config (columns, image folder) and the rows to predict as `test`. No training rows are needed."""
    folder = image_dir or data.get("image_dir")
    return Competition(
        train=test.iloc[:0],
        test=test,
        y=np.zeros(0),
        task=info["task"],
        metric=get_metric(info["metric"], info["task"]),
        classes=info["classes"],
        id_col=info["id_col"],
        target=info["target"],
        feature_cols=list(info.get("feature_cols") or []),
        image_col=info.get("image_col"),
        image_dir=Path(folder) if folder else None,
        text_col=info.get("text_col"),
    )


SOURCES = ("model.backbone.weights", "model.backbone.name")  # the config keys that may name a weights file/folder


def with_local_sources(cfg: DictConfig, out_dir: Path) -> DictConfig:
    """A relative weights path that is not found from here is looked up in the competition's outputs folder, where
    `make bundle` puts the weights its members need (`weights/<file>`)."""
    for key in SOURCES:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
            if (out_dir / value).exists():
                OmegaConf.update(cfg, key, str(out_dir / value))
    return cfg


def predict_member(folder: ModelFolder, info: dict, test: pd.DataFrame, image_dir: str | None = None) -> np.ndarray:
    """(rows, columns) predictions of `test` by the member in `folder`, in the target's units."""
    cfg = with_local_sources(folder.read_config(), folder.path.parent.parent)
    comp = member_competition(info, cfg.data, test, image_dir)
    _, inverse = TARGET_TRANSFORMS[cfg.model.get("target_transform", TargetTransform.NONE)]
    has_backbone = cfg.model.kind in BACKBONE_KINDS
    frozen = cfg.model.get("finetune") == Finetune.FROZEN
    backbone, emb, preds = None, None, []
    for k in folder.fold_ids():
        state, weights = folder.read_fold_model(k)
        if has_backbone and (backbone is None or not frozen):  # finetuned folds load their own backbone weights
            backbone = build_backbone(cfg.model.kind, cfg.model.backbone)
        if frozen and has_backbone and emb is None:  # one embedding pass serves every fold
            emb = test_embeddings(cfg, comp, backbone, state)
        ds = test_dataset(cfg, comp, backbone, state, emb)
        if weights is None:
            est = state["estimator"]
            with threadpool_limits(limits=torch.get_num_threads()):
                pred = predict_sklearn(est, comp, sklearn_inputs(est, ds, state["categorical"]))
        else:
            net = build_net(cfg, comp, backbone, state["in_dim"])
            net.load_state_dict(weights)
            net.y_mean, net.y_std = state["y_scale"]
            pred = predict_net(cfg, net, ds)
        preds.append(to_target(pred, state["y_range"], inverse))
    return np.mean(preds, axis=0)
