"""Per-fold model inputs: tabular features and TF-IDF fitted on the fold's training rows, image/text datasets and
frozen-backbone embeddings (`embeddings.py`); and the test rows of any test file rebuilt from what a fold fitted."""

import hashlib
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from torch.utils.data import Dataset

from pipeline.choices import BACKBONE_KINDS, HeadType, ModelKind, is_frozen
from pipeline.data.contract import Competition
from pipeline.data.image import ImageDataset, build_transform, image_paths, normalization
from pipeline.data.tabular import TabularFeatures, feature_columns
from pipeline.data.text import TextDataset, tokenize
from pipeline.data.tfidf import counted_tfidf, pack, tfidf_features, unpack
from pipeline.errors import UserError
from pipeline.models.backbones import Backbone
from pipeline.training.embeddings import fast_tokenizer, frozen_embeddings
from pipeline.training.loaders import ArrayDataset

log = logging.getLogger(__name__)


@dataclass
class FoldInputs:
    """One fold's datasets and what was fitted to build them.

    Attributes:
        datasets: "train", "val" and "test" datasets.
        in_dim: the head's input width.
        fitted: what `test_dataset` rebuilds the test rows of any test file from (tabular transformer, TF-IDF,
            image statistics, the ONNX export and tokenizer); saved with the fold model.
        test_seconds: the time the test rows' features took (tabular, TF-IDF, a finetuned text model's tokens;
            frozen embeddings are timed by their cache), part of the time spent predicting them.
    """

    datasets: dict[str, Dataset]
    in_dim: int
    fitted: dict
    test_seconds: float = 0.0


@dataclass
class Tabular:
    """One fold's tabular features: the transformer fitted on its train rows, every train and test row through it,
    its width and the seconds the test rows took (all empty without feature columns)."""

    fitted: TabularFeatures | None = None
    train: np.ndarray | None = None
    test: np.ndarray | None = None
    dim: int = 0
    seconds: float = 0.0


def fit_tabular(comp: Competition, data_cfg, train_rows: np.ndarray) -> Tabular:
    """Tabular features of all train and test rows, every statistic fitted on the fold's train rows (a target
    encoding's codes of those rows out of inner folds: none sees its own target)."""
    if not comp.feature_cols and not data_cfg.get("text_stats"):
        return Tabular()
    numeric, categorical, extra = feature_columns(comp, data_cfg)
    tab = TabularFeatures(
        numeric,
        categorical,
        data_cfg.categorical_encoding,
        data_cfg.rare_min_frequency,
        data_cfg.get("numeric_scaling", "standard"),
        extra,
    )
    if tab.cross_fitted:
        fitted_rows = tab.fit_transform(comp.train.iloc[train_rows], comp.y[train_rows])
    else:
        tab.fit(comp.train.iloc[train_rows])
    tick = time.time()
    test = tab.transform(comp.test)
    seconds = time.time() - tick
    if tab.cross_fitted:  # the training rows as fit_transform gave them, the others transformed
        train = np.empty((len(comp.train), fitted_rows.shape[1]), np.float32)
        rest = np.setdiff1d(np.arange(len(comp.train)), train_rows)
        train[train_rows], train[rest] = fitted_rows, tab.transform(comp.train.iloc[rest])
    else:
        train = tab.transform(comp.train)
    return Tabular(tab, train, test, len(tab.names), seconds)


def image_datasets(comp, backbone: Backbone, mcfg, rows: dict, tab: dict, y: np.ndarray) -> dict[str, Dataset]:
    """Lazy image datasets for a fold: augmented train, plain val and test, normalized as the backbone needs."""
    size = mcfg.backbone.input_size
    paths = image_paths(comp, comp.train)
    stats = (backbone.mean, backbone.std) if backbone.own_stats else None
    mean, std = normalization(stats, [paths[i] for i in rows["train"]], size)
    plain = build_transform(size, mean, std)
    aug = build_transform(size, mean, std, mcfg.augment)
    test_paths = image_paths(comp, comp.test)
    return {
        "train": ImageDataset([paths[i] for i in rows["train"]], aug, tab["train"], y[rows["train"]]),
        "val": ImageDataset([paths[i] for i in rows["val"]], plain, tab["val"], y[rows["val"]]),
        "test": ImageDataset(test_paths, plain, tab["test"]),
    }


def text_datasets(comp, backbone: Backbone, max_length: int, cache_dir: Path, rows, tab, y) -> tuple[dict, float]:
    """Train/val/test datasets of tokens, and the seconds the test texts' tokens took (part of predicting them)."""
    train_tok = tokenize(comp.train[comp.text_col].tolist(), backbone.tokenizer, max_length, cache_dir)
    tick = time.time()
    test_tok = tokenize(comp.test[comp.text_col].tolist(), backbone.tokenizer, max_length, cache_dir)
    ds = {
        "train": TextDataset(train_tok, rows["train"], tab["train"], y[rows["train"]]),
        "val": TextDataset(train_tok, rows["val"], tab["val"], y[rows["val"]]),
        "test": TextDataset(test_tok, np.arange(len(comp.test)), tab["test"]),
    }
    return ds, time.time() - tick


def fold_datasets(
    comp: Competition, backbone: Backbone | None, cfg, rows: dict, y: np.ndarray, cache_dir: Path
) -> FoldInputs:
    """Train/val/test datasets of one fold, the head's input width and what was fitted (`FoldInputs`).

    `rows` holds the fold's "train" and "val" row indices; nothing fitted here sees the val or test rows.
    """
    tabular = fit_tabular(comp, cfg.data, rows["train"])
    inputs = _fold_datasets(comp, backbone, cfg, rows, y, cache_dir, tabular)
    inputs.test_seconds += tabular.seconds
    inputs.fitted = {"tab": tabular.fitted, "in_dim": inputs.in_dim, **inputs.fitted}
    return inputs


def _fold_datasets(comp, backbone, cfg, rows, y, cache_dir, tabular: Tabular) -> FoldInputs:
    mcfg, tab_all, tab_test, tab_dim = cfg.model, tabular.train, tabular.test, tabular.dim
    tab = {"train": _take(tab_all, rows["train"]), "val": _take(tab_all, rows["val"]), "test": tab_test}
    if mcfg.kind == ModelKind.TFIDF:
        ds, vectorizer, seconds = tfidf_datasets(comp, mcfg, rows, y, tab_all, tab_test)
        return FoldInputs(ds, tab_dim, {"tfidf": pack(vectorizer)}, seconds)
    if backbone is None:
        return FoldInputs(_arrays({"tab": tab_all}, {"tab": tab_test}, rows, y), tab_dim, {})
    frozen = is_frozen(mcfg)
    if mcfg.kind == ModelKind.TEXT:  # frozen: every row is embedded once, so build the datasets over all rows
        all_rows = {"train": np.arange(len(comp.train)), "val": np.arange(0)}
        ds, seconds = text_datasets(
            comp,
            backbone,
            cfg.data.max_length,
            cache_dir,
            all_rows if frozen else rows,
            dict.fromkeys(tab) if frozen else tab,
            y,
        )
    else:
        ds, seconds = image_datasets(comp, backbone, mcfg, rows, tab, y), 0.0
    norm = {"norm": _norm(ds["val"].transform)} if isinstance(ds["val"], ImageDataset) else {}
    if not frozen:
        return FoldInputs(ds, backbone.dim + tab_dim, norm, seconds)
    if mcfg.kind == ModelKind.TEXT:
        ds["all"] = ds["train"]
        extra = {"max_length": cfg.data.max_length}
    else:
        ds["all"] = ImageDataset(image_paths(comp, comp.train), ds["val"].transform)
        extra = {
            "size": mcfg.backbone.input_size,
            "norm": str(ds["val"].transform.transforms[-1]),
            "tta": mcfg.tta,
        }
    emb, encoder = frozen_embeddings(comp, backbone, cfg, ds, cache_dir, extra, seconds)
    train = {"emb": emb["train"], "emb_flip": emb.get("train_flip"), "tab": tab_all}
    test = {"emb": emb["test"], "emb_flip": emb.get("test_flip"), "tab": tab_test}
    if encoder is not None:  # predict embeds new rows with it too: relative to the outputs folder, as in a bundle
        norm["encoder"] = encoder.relative_to(Path(cache_dir).parent).as_posix()
        tokenizer = mcfg.kind == ModelKind.TEXT and fast_tokenizer(comp, backbone, cfg.data.max_length, ds, encoder)
        if tokenizer:
            norm["tokenizer"] = tokenizer.relative_to(Path(cache_dir).parent).as_posix()
    return FoldInputs(_arrays(train, test, rows, y), backbone.dim + tab_dim, norm)


def _norm(transform) -> tuple[list, list]:
    """The (mean, std) of an image transform's final Normalize."""
    t = transform.transforms[-1]
    return [float(v) for v in t.mean], [float(v) for v in t.std]


def once(shared: dict, key, compute: Callable[[], Any]) -> Any:
    """`shared[key]`, computed the first time it is asked for."""
    if key not in shared:
        shared[key] = compute()
    return shared[key]


def test_dataset(
    cfg, comp: Competition, backbone: Backbone | None, fitted: dict, emb: dict | None, shared: dict
) -> Dataset:
    """`comp.test` as one fold's model reads it, through that fold's fitted preprocessing (`fold_datasets`'s
    `fitted`); `emb`: the test rows' frozen-backbone embeddings (`test_embeddings`). `shared`: what the fold models
    of every member predicting these rows compute once (`once`): the tabular features of a fitted transformer that
    other members fitted alike (the same columns, encoding and folds), and the TF-IDF's n-gram counts."""
    mcfg = cfg.model
    tab = None
    if fitted.get("tab") is not None:
        key = ("tab", hashlib.sha256(pickle.dumps(fitted["tab"])).hexdigest())  # equal bytes: the same statistics
        tab = once(shared, key, lambda: fitted["tab"].transform(comp.test))
    if mcfg.kind == ModelKind.TFIDF:
        x = counted_tfidf(unpack(fitted["tfidf"]), comp.test[comp.text_col], shared)
        return ArrayDataset({"tfidf": x, "tab": tab})
    if mcfg.kind not in BACKBONE_KINDS:
        return ArrayDataset({"tab": tab})
    if is_frozen(mcfg):
        return ArrayDataset({"emb": emb["test"], "emb_flip": emb.get("test_flip"), "tab": tab})
    if mcfg.kind == ModelKind.TEXT:
        tokens = tokenize(comp.test[comp.text_col].tolist(), backbone.tokenizer, cfg.data.max_length, None)
        return TextDataset(tokens, np.arange(len(comp.test)), tab)
    return ImageDataset(image_paths(comp, comp.test), build_transform(mcfg.backbone.input_size, *fitted["norm"]), tab)


def tfidf_datasets(comp: Competition, mcfg, rows: dict, y: np.ndarray, tab_all, tab_test) -> tuple:
    """Sparse TF-IDF of the text column (vocabulary and IDF from the fold's training rows) + tabular features; the
    fitted vectorizer and the seconds the test rows took."""
    if not comp.text_col:
        raise UserError("model.kind=tfidf needs a text column: set data.text_col=<column>")
    if mcfg.head.type != HeadType.SKLEARN:
        raise UserError(
            f"model.kind=tfidf needs model.head.type=sklearn (its features are sparse), not {mcfg.head.type}"
        )
    vectorizer = hydra.utils.instantiate(mcfg.vectorizer)
    x_all = tfidf_features(vectorizer, comp.train[comp.text_col], rows["train"])
    tick = time.time()
    x_test = tfidf_features(vectorizer, comp.test[comp.text_col])
    seconds = time.time() - tick
    log.info("tfidf: %d columns, %.0f non-zeros a row", x_all.shape[1], x_all.nnz / max(1, x_all.shape[0]))
    return _arrays({"tfidf": x_all, "tab": tab_all}, {"tfidf": x_test, "tab": tab_test}, rows, y), vectorizer, seconds


def _take(a: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[rows]


def _arrays(train: dict, test: dict, rows: dict, y: np.ndarray) -> dict[str, Dataset]:
    """ArrayDatasets of the fold's train and val rows (with targets) and of the test rows."""

    def part(r):
        return ArrayDataset({**{k: _take(v, r) for k, v in train.items()}, "y": y[r]})

    return {"train": part(rows["train"]), "val": part(rows["val"]), "test": ArrayDataset(test)}
