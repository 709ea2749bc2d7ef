"""Frozen-backbone embeddings: computed once, cached on disk and shared by every head, seed and job; computed by
the backbone's ONNX export when `trainer.onnx` names its kind (`pipeline/models/exported.py`), whose text tokenizer
is saved beside it."""

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset
from tqdm import tqdm

from pipeline.artifacts import atomic_write
from pipeline.choices import ModelKind
from pipeline.data.contract import Competition
from pipeline.data.image import ImageDataset, build_transform, image_paths
from pipeline.data.text import TextDataset, tokenize
from pipeline.models import exported
from pipeline.models.backbones import Backbone, is_local
from pipeline.models.weights import resolve_path
from pipeline.training.devices import device_default
from pipeline.training.loaders import in_row_order, length_order, loader

log = logging.getLogger(__name__)


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


def encoder_file(mcfg, onnx_kinds, backbone: Backbone, cache_dir: Path) -> Path | None:
    """Where the backbone's ONNX export lives in the cache (`pipeline/models/exported.py`), when `trainer.onnx` names
    its kind and ONNX Runtime can run it; None: torch embeds."""
    if mcfg.kind not in onnx_kinds or not exported.usable(backbone.module):
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
    encoder = encoder_file(mcfg, cfg.trainer.get("onnx", []), backbone, cache_dir)
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


def fast_tokenizer(comp, backbone: Backbone, max_length: int, datasets: dict, encoder: Path) -> Path | None:
    """The text backbone's tokenizer saved beside its export (`exported.save_tokenizer`), checked on every train and
    test text against the tokens training used."""
    path = encoder.with_name(f"tokenizer-{encoder.stem.removeprefix('encoder-')}-{max_length}.json")
    if path.is_file():
        return path
    texts = [*comp.train[comp.text_col].tolist(), *comp.test[comp.text_col].tolist()]
    parts = (datasets["all"].tokens, datasets["test"].tokens)
    tokens = {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "attention_mask")}
    return exported.save_tokenizer(backbone.tokenizer, max_length, texts, tokens, path)


def engine(encoder: Path | None) -> dict:
    """The embedding cache key's part for the engine: none for torch, so that caches written before stay valid."""
    return {} if encoder is None else {"engine": "onnxruntime"}


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


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
