"""Predict new rows with a trained member: each fold model, through its own fitted preprocessing, on the rows, then
averaged over the folds as training averaged its test predictions (or its refit model alone, where training refitted
one on every row). Nothing is fitted here."""

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from pipeline.artifacts import CompetitionInfo, ModelFolder
from pipeline.choices import BACKBONE_KINDS, ModelKind, TargetTransform, is_frozen
from pipeline.data.contract import Competition, image_folder
from pipeline.errors import UserError
from pipeline.models import exported
from pipeline.models.backbones import Backbone, build_backbone, text_tokenizer
from pipeline.training.embeddings import test_embeddings
from pipeline.training.estimators import predict_sklearn, sklearn_inputs
from pipeline.training.fold_inputs import once, test_dataset
from pipeline.training.inference import build_model, predict_net, predict_nets
from pipeline.training.targets import TARGET_TRANSFORMS, to_target

log = logging.getLogger(__name__)


def member_competition(info: CompetitionInfo, data, test: pd.DataFrame, image_dir: str | None = None) -> Competition:
    """The competition as a member's fold models read it: competition.json's task and classes, the member's data
    config (its image folder) and the rows to predict as `test`. No training rows are needed."""
    return Competition.for_predict(info, test, image_folder(info, data, image_dir))


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


def frozen_test_embeddings(cfg: DictConfig, comp: Competition, state: dict, shared: dict, out_dir: Path) -> dict:
    """The test rows' embeddings by the member's frozen backbone, computed once per backbone, engine, input size,
    normalization, TTA and rows (members that differ only in their heads share them, as in training)."""
    column = comp.test[comp.text_col if cfg.model.kind == ModelKind.TEXT else comp.image_col]
    spec = [OmegaConf.to_container(cfg.model.backbone), state.get("norm"), cfg.model.tta, cfg.data.get("max_length")]
    spec += [str(comp.image_dir), state.get("encoder")]  # the same file names in another folder are other images
    digest = hashlib.sha256(json.dumps([spec, column.astype(str).tolist()], default=str).encode()).hexdigest()
    return once(
        shared, ("embeddings", digest), lambda: test_embeddings(cfg, comp, frozen_backbone(cfg, state, out_dir), state)
    )


def frozen_backbone(cfg: DictConfig, state: dict, out_dir: Path) -> Backbone:
    """The backbone that embedded the training rows: its ONNX export when training used one (`state["encoder"]`,
    exported again if the file is gone), with the tokenizer alone for text; else the torch backbone."""
    if not state.get("encoder"):
        return build_backbone(cfg.model.kind, cfg.model.backbone)
    path = out_dir / state["encoder"]
    if importlib.util.find_spec("onnxruntime") is None:
        raise UserError(f"a member embeds through its ONNX export {path}: pip install onnxruntime")
    if not path.is_file():
        log.info("%s not found: exporting the backbone again", path)
        module = build_backbone(cfg.model.kind, cfg.model.backbone).module
        if exported.export(module, cfg.model.kind, cfg.model.backbone.get("input_size"), path) is None:
            raise UserError(f"{path} is missing and the backbone cannot be exported here: copy the file back")
    return Backbone(exported.OnnxEncoder(path), 0, True, tokenizer=frozen_tokenizer(cfg, state, out_dir))


def frozen_tokenizer(cfg: DictConfig, state: dict, out_dir: Path):
    """A text backbone's tokenizer as training saved it beside the export (no transformers to import), or the
    transformers one; None for images."""
    if cfg.model.kind != ModelKind.TEXT:
        return None
    if state.get("tokenizer") and (out_dir / state["tokenizer"]).is_file():
        return exported.FastTokenizer.load(out_dir / state["tokenizer"])
    return text_tokenizer(cfg.model.backbone)


def predict_member(
    folder: ModelFolder,
    info: CompetitionInfo,
    test: pd.DataFrame,
    image_dir: str | None = None,
    shared: dict | None = None,
) -> np.ndarray:
    """(rows, columns) predictions of `test` by the member in `folder`, in the target's units: its fold models'
    average, or its refit model's (model.refit_full: it alone made test.csv). `shared`: what the members predicting
    these same rows compute once (`test_dataset`, frozen embeddings); `predict_rows` passes one to all its members."""
    folds = (
        [folder.read_refit_model()] if folder.has_refit() else [folder.read_fold_model(k) for k in folder.fold_ids()]
    )
    return np.mean(predict_folds(folder, info, test, folds, image_dir, shared), axis=0)


def predict_folds(
    folder: ModelFolder,
    info: CompetitionInfo,
    test: pd.DataFrame,
    folds: list[tuple[dict, dict | None]],
    image_dir: str | None = None,
    shared: dict | None = None,
) -> list[np.ndarray]:
    """Each of the `folds` models' (state, weights) predictions of `test`, in the target's units."""
    shared = {} if shared is None else shared
    cfg = with_local_sources(folder.read_config(), folder.path.parent.parent)
    comp = member_competition(info, cfg.data, test, image_dir)
    _, inverse = TARGET_TRANSFORMS[cfg.model.get("target_transform", TargetTransform.NONE)]
    has_backbone = cfg.model.kind in BACKBONE_KINDS
    frozen = is_frozen(cfg.model)
    if has_backbone and not frozen and one_input(folds):  # one pass over the rows, every fold model on each batch
        backbones = [finetuned_backbone(cfg) for _ in folds]
        nets = [fold_net(cfg, comp, b, state, weights) for b, (state, weights) in zip(backbones, folds, strict=True)]
        raw = predict_nets(cfg, nets, test_dataset(cfg, comp, backbones[0], folds[0][0], None, shared))
        return [to_target(p, s["y_range"], inverse) for p, (s, _) in zip(raw, folds, strict=True)]
    backbone, emb, preds = None, None, []
    for state, weights in folds:
        if has_backbone and frozen and emb is None:  # one embedding pass serves every fold, and every member alike
            emb = frozen_test_embeddings(cfg, comp, state, shared, folder.path.parent.parent)
        elif has_backbone and not frozen:
            backbone = finetuned_backbone(cfg)
        ds = test_dataset(cfg, comp, backbone, state, emb, shared)
        if weights is None:
            est = state["estimator"]
            with threadpool_limits(limits=torch.get_num_threads()):
                x = sklearn_inputs(est, ds, state["categorical"], cfg.model.get("sparse_input", False))
                pred = predict_sklearn(est, comp, x)
        else:
            pred = predict_net(cfg, fold_net(cfg, comp, backbone, state, weights), ds)
        preds.append(to_target(pred, state["y_range"], inverse))
    return preds


def finetuned_backbone(cfg: DictConfig):
    """A finetuned fold's backbone, built without reading its pretrained weights: the fold's state replaces every
    one of them (mnist's 20 finetuned folds read the ImageNet file 20 times, ~1 s)."""
    return build_backbone(cfg.model.kind, OmegaConf.merge(cfg.model.backbone, {"weights": None}))


def one_input(folds: list[tuple[dict, dict | None]]) -> bool:
    """True when every fold model reads the same test inputs: no tabular features (fitted per fold), and one image
    normalization (a pretrained backbone's own; from scratch, each fold has its training images' mean)."""
    first = folds[0][0]
    return all(s.get("tab") is None and s.get("norm") == first.get("norm") for s, _ in folds)


def fold_net(cfg: DictConfig, comp: Competition, backbone, state: dict, weights: dict) -> torch.nn.Module:
    net = build_model(cfg, comp, backbone, state["in_dim"])
    net.load_state_dict(weights)
    net.y_mean, net.y_std = state["y_scale"]
    return net
