"""Per-fold model inputs: tabular features and TF-IDF fitted on the fold's training rows, image/text datasets,
and frozen-backbone embeddings computed once, cached on disk and shared by every head, seed and job."""

import hashlib
import json
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import OmegaConf
from scipy import sparse
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler
from tqdm import tqdm

from pipeline.artifacts import atomic_write
from pipeline.choices import BACKBONE_KINDS, Finetune, HeadType, ModelKind
from pipeline.data.contract import Competition
from pipeline.data.image import ImageDataset, build_transform, normalization
from pipeline.data.tabular import TabularFeatures, split_columns
from pipeline.data.text import TextDataset, tokenize, trim_collate
from pipeline.data.tfidf import counted_tfidf, pack, tfidf_features, unpack
from pipeline.errors import UserError
from pipeline.models import exported
from pipeline.models.backbones import Backbone, is_local
from pipeline.models.weights import resolve_path
from pipeline.training.devices import device_default

log = logging.getLogger(__name__)


class ArrayDataset(Dataset):
    """In-memory arrays indexed a whole batch at a time (fast for heads on features: no per-row collate).

    Scipy sparse matrices (TF-IDF) stay sparse, for scikit-learn heads; dense arrays become tensors.
    """

    def __init__(self, arrays: dict[str, np.ndarray | sparse.csr_matrix]):
        self.arrays = {k: v if sparse.issparse(v) else torch.as_tensor(v) for k, v in arrays.items() if v is not None}

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def __getitem__(self, idx: list[int]) -> dict:
        return {k: v[idx] for k, v in self.arrays.items()}


def array_loader(arrays: dict, batch_size: int, shuffle: bool) -> DataLoader:
    ds = ArrayDataset(arrays)
    sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
    lone = shuffle and len(ds) % batch_size == 1  # a training batch of 1 row breaks batch norm: drop that row
    return DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=lone), batch_size=None)


def fit_tabular(comp: Competition, data_cfg, train_rows: np.ndarray):
    """Tabular features for (fold train, fold val, test), every statistic fitted on the fold's train rows, and the
    seconds the test rows took."""
    if not comp.feature_cols:
        return None, None, None, 0, 0.0
    numeric, categorical = split_columns(comp.train, comp.feature_cols, data_cfg.get("feature_cols") is not None)
    tab = TabularFeatures(
        numeric,
        categorical,
        data_cfg.categorical_encoding,
        data_cfg.rare_min_frequency,
        data_cfg.get("numeric_scaling", "standard"),
    )
    tab.fit(comp.train.iloc[train_rows])
    tick = time.time()
    test = tab.transform(comp.test)
    return tab, tab.transform(comp.train), test, len(tab.names), time.time() - tick


def image_paths(comp: Competition, df) -> list[Path]:
    return [comp.image_dir / str(p) for p in df[comp.image_col]]


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


def loader(ds: Dataset, batch_size: int, shuffle: bool, num_workers: int, order=None) -> DataLoader:
    """Batches of `ds`: shuffled (training), in row order, or in `order` (`length_order`)."""
    collate = trim_collate if isinstance(ds, TextDataset) else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=order,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),  # page-locked batches copy to a GPU asynchronously
    )


def length_order(ds: Dataset) -> np.ndarray | None:
    """For inference: a text dataset's rows from the shortest text to the longest, so that each batch pads only to
    texts of its own length (MiniLM over rotten's 2,551 test texts: 11 s instead of 22 s); None for other data."""
    if not isinstance(ds, TextDataset):
        return None
    return np.argsort(ds.tokens["attention_mask"][ds.rows].sum(1).numpy(), kind="stable")


def in_row_order(out: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Outputs computed in `order` (`length_order`), put back in the dataset's own row order."""
    if order is None:
        return out
    back = np.empty_like(out)
    back[order] = out
    return back


# -- frozen-backbone embeddings ----------------------------------------------------------------------------
def _source_stamp(mcfg) -> list | None:
    """Size and mtime of a local weights file/folder, so that replacing it invalidates the cache."""
    source = mcfg.backbone.get("weights") if mcfg.kind == ModelKind.IMAGE else mcfg.backbone.name
    if not source or source in ("hub", "pretrained") or not is_local(source):
        return None
    st = resolve_path(source).stat()
    return [st.st_size, int(st.st_mtime)]


def embedding_key(mcfg, comp: Competition, extra: dict) -> str:
    """Cache key: backbone, weights, preprocessing (size, statistics, TTA, max_length), train and test data."""
    test_hash = hashlib.sha256(comp.test.to_csv(index=False).encode()).hexdigest()[:16]
    spec = {
        "backbone": OmegaConf.to_container(mcfg.backbone),
        "stamp": _source_stamp(mcfg),
        "train": comp.data_hash,
        "test": test_hash,
        **extra,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.no_grad()
def embed(module: torch.nn.Module, ds: Dataset, batch_size: int, flip: bool = False) -> np.ndarray:
    """Backbone features of every row of `ds`, in order, in eval mode (on the GPU when there is one)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = device_default("num_workers") if device.type == "cuda" else 0  # decoding images would starve a GPU
    module.eval().to(device)
    out, order = [], length_order(ds)
    for batch in tqdm(loader(ds, batch_size, False, workers, order), desc="embedding", leave=False, mininterval=5):
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if "image" in batch:
            image = batch["image"].flip(-1) if flip else batch["image"]
            out.append(module(image.contiguous(memory_format=torch.channels_last)).float().cpu())
        else:
            out.append(module(batch["input_ids"], batch["attention_mask"]).float().cpu())
    module.to("cpu")  # the backbone object is shared with the fold code, which expects it where it was built
    return in_row_order(torch.cat(out).numpy(), order)


def encoder_file(cfg, backbone: Backbone, cache_dir: Path) -> Path | None:
    """Where the backbone's ONNX export lives in the cache (`pipeline/models/exported.py`), when `trainer.onnx` names
    its kind and ONNX Runtime can run it; None: torch embeds."""
    mcfg = cfg.model
    if mcfg.kind not in cfg.trainer.get("onnx", []) or not exported.usable(backbone.module):
        return None
    spec = {"backbone": OmegaConf.to_container(mcfg.backbone), "stamp": _source_stamp(mcfg), "kind": mcfg.kind}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"encoder-{digest}.onnx"


def frozen_embeddings(
    comp, backbone: Backbone, cfg, datasets: dict, cache_dir: Path, extra: dict, seconds: float = 0.0
) -> tuple:
    """Embeddings of all train and test rows (and their flips for TTA), from the cache or computed once, and the
    ONNX export that computed them (None: torch did). Embeddings torch cached earlier are used as they are.
    `seconds`: what the test rows already took (their tokens), counted with their embedding pass."""
    mcfg = cfg.model
    encoder = encoder_file(cfg, backbone, cache_dir)
    paths = {e: Path(cache_dir) / f"emb-{embedding_key(mcfg, comp, extra | engine(e))}.npz" for e in (encoder, None)}
    for e, path in paths.items():
        if path.is_file():
            log.info("embeddings: cache hit %s", path)
            with np.load(path) as z:
                return dict(z), e
    if encoder is not None and not encoder.is_file():
        encoder = exported.export(backbone.module, mcfg.kind, mcfg.backbone.get("input_size"), encoder)
    module, path = (exported.OnnxEncoder(encoder), paths[encoder]) if encoder else (backbone.module, paths[None])
    log.info("embeddings: computing %s for %d + %d rows", mcfg.backbone.name, len(comp.train), len(comp.test))
    bs, tta = cfg.trainer.predict_batch_size, mcfg.tta and mcfg.kind == ModelKind.IMAGE
    emb = {"train": embed(module, datasets["all"], bs)}
    if tta:
        emb["train_flip"] = embed(module, datasets["all"], bs, flip=True)
    tick = time.time()
    emb["test"] = embed(module, datasets["test"], bs)
    if tta:
        emb["test_flip"] = embed(module, datasets["test"], bs, flip=True)
    seconds = np.array(seconds + time.time() - tick)  # the test rows' share, for benchmarks/bench_predict.py
    atomic_write(path, lambda tmp: _savez(tmp, emb | {"test_seconds": seconds}))
    log.info("embeddings: cached %s", path)
    return emb, encoder


def fast_tokenizer(comp, backbone: Backbone, cfg, datasets: dict, encoder: Path) -> Path | None:
    """The text backbone's tokenizer saved beside its export (`exported.save_tokenizer`), checked on every train and
    test text against the tokens training used."""
    path = encoder.with_name(f"tokenizer-{encoder.stem.removeprefix('encoder-')}-{cfg.data.max_length}.json")
    if path.is_file():
        return path
    texts = [*comp.train[comp.text_col].tolist(), *comp.test[comp.text_col].tolist()]
    parts = (datasets["all"].tokens, datasets["test"].tokens)
    tokens = {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "attention_mask")}
    return exported.save_tokenizer(backbone.tokenizer, cfg.data.max_length, texts, tokens, path)


def engine(encoder: Path | None) -> dict:
    """The embedding cache key's part for the engine: none for torch, so that caches written before stay valid."""
    return {} if encoder is None else {"engine": "onnxruntime"}


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


def fold_datasets(
    comp: Competition, backbone: Backbone | None, cfg, rows: dict, y: np.ndarray, cache_dir: Path
) -> tuple[dict[str, Dataset], int]:
    """Train/val/test datasets of one fold and the head's input width.

    `rows` holds the fold's "train" and "val" row indices; nothing fitted here sees the val or test rows. What
    was fitted (tabular transformer, TF-IDF, image statistics) lands in `datasets["fitted"]`: `test_dataset`
    rebuilds the test rows of any test file from it. `datasets["test_seconds"]`: the time the test rows' features
    took (tabular, TF-IDF, a finetuned text model's tokens; frozen embeddings are timed by their cache), part of the
    time spent predicting them.
    """
    tab_fit, tab_all, tab_test, tab_dim, seconds = fit_tabular(comp, cfg.data, rows["train"])
    ds, in_dim, fitted = _fold_datasets(comp, backbone, cfg, rows, y, cache_dir, tab_all, tab_test, tab_dim)
    ds["test_seconds"] = seconds + fitted.pop("test_seconds", 0.0)
    ds["fitted"] = {"tab": tab_fit, "in_dim": in_dim, **fitted}
    return ds, in_dim


def _fold_datasets(comp, backbone, cfg, rows, y, cache_dir, tab_all, tab_test, tab_dim) -> tuple[dict, int, dict]:
    mcfg = cfg.model
    tab = {"train": _take(tab_all, rows["train"]), "val": _take(tab_all, rows["val"]), "test": tab_test}
    if mcfg.kind == ModelKind.TFIDF:
        ds, vectorizer, seconds = tfidf_datasets(comp, mcfg, rows, y, tab_all, tab_test)
        return ds, tab_dim, {"tfidf": pack(vectorizer), "test_seconds": seconds}
    if backbone is None:
        return _arrays({"tab": tab_all}, {"tab": tab_test}, rows, y), tab_dim, {}
    frozen = mcfg.finetune == Finetune.FROZEN
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
        return ds, backbone.dim + tab_dim, norm | {"test_seconds": seconds}
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
        if mcfg.kind == ModelKind.TEXT and (tokenizer := fast_tokenizer(comp, backbone, cfg, ds, encoder)):
            norm["tokenizer"] = tokenizer.relative_to(Path(cache_dir).parent).as_posix()
    return _arrays(train, test, rows, y), backbone.dim + tab_dim, norm


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
    if mcfg.finetune == Finetune.FROZEN:
        return ArrayDataset({"emb": emb["test"], "emb_flip": emb.get("test_flip"), "tab": tab})
    if mcfg.kind == ModelKind.TEXT:
        tokens = tokenize(comp.test[comp.text_col].tolist(), backbone.tokenizer, cfg.data.max_length, None)
        return TextDataset(tokens, np.arange(len(comp.test)), tab)
    return ImageDataset(image_paths(comp, comp.test), build_transform(mcfg.backbone.input_size, *fitted["norm"]), tab)


def test_embeddings(cfg, comp: Competition, backbone: Backbone, fitted: dict) -> dict:
    """The frozen backbone's embeddings of `comp.test` (and their flips for TTA), as training computed them."""
    mcfg, bs = cfg.model, cfg.trainer.predict_batch_size
    if mcfg.kind == ModelKind.TEXT:
        tokens = tokenize(comp.test[comp.text_col].tolist(), backbone.tokenizer, cfg.data.max_length, None)
        ds = TextDataset(tokens, np.arange(len(comp.test)), None)
    else:
        ds = ImageDataset(image_paths(comp, comp.test), build_transform(mcfg.backbone.input_size, *fitted["norm"]))
    emb = {"test": embed(backbone.module, ds, bs)}
    if mcfg.tta and mcfg.kind == ModelKind.IMAGE:
        emb["test_flip"] = embed(backbone.module, ds, bs, flip=True)
    return emb


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
