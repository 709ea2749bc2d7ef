"""Backbones: any timm image model or transformers text encoder, returning one feature vector per example."""

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.choices import ModelKind, Pooling, is_pretrained
from pipeline.errors import UserError
from pipeline.models.weights import load_matching, read_state_dict, resolve_path

log = logging.getLogger(__name__)


@dataclass
class Backbone:
    """A feature extractor plus what its inputs need (image statistics or a tokenizer)."""

    module: nn.Module
    dim: int
    own_stats: bool  # images are normalized by mean/std below (pretrained weights'), not by the fold's images
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tokenizer: object = None


PIXELS = "pixels"  # model.backbone.name=pixels: no network, the image itself at input_size


class Pixels(nn.Module):
    """An image's grey levels, flattened: the mean of its (normalized) channels at each pixel."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(1).flatten(1)


def pixels(size: int) -> Backbone:
    """The image itself as features: its grey levels at `size` x `size` in [-1, 1], a frozen "backbone" without
    weights. On small, centred images (digits, glyphs, icons) a kernel model on them is strong, and it errs unlike
    heads on ImageNet features (mnist at 28 px: an RBF SVM scores 0.959 on the test images in 20 s; LogisticRegression
    on EfficientNet-Lite0 features at 224 px, 0.957 in 110 s). Grey: colour triples the features (and an SVM's
    time) for little on such images."""
    return Backbone(Pixels(), size * size, True, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def image_backbone(cfg) -> Backbone:
    """A timm model without its classifier; weights from cfg.weights (see pipeline/models/weights.py); or the
    image's own pixels (`pixels`)."""
    if cfg.name == PIXELS:
        return pixels(int(cfg.input_size))
    import timm

    if not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name.split('_')[0]}*")[:8]
        raise UserError(f"unknown model.backbone.name '{cfg.name}' (timm); similar: {', '.join(close) or 'none'}")
    weights = cfg.get("weights")
    try:
        model = timm.create_model(cfg.name, pretrained=weights == "hub")
    except Exception as e:  # offline: huggingface_hub's LocalEntryNotFoundError, a connection error, ...
        if weights != "hub":
            raise
        raise UserError(
            f"model.backbone.weights=hub: the pretrained weights of '{cfg.name}' cannot be downloaded "
            f"({type(e).__name__}); offline, give model.backbone.weights=<local file or folder> (or pkg://...)"
        ) from e
    if weights and weights != "hub":
        how = load_matching(model, read_state_dict(resolve_path(weights)), weights)
        log.info("backbone %s: loaded %s (%s)", cfg.name, weights, how)
    model.reset_classifier(0)
    if cfg.get("channels_last", True):  # NHWC: CPU convolutions run ~2x faster (measured on EfficientNet-Lite0)
        model = model.to(memory_format=torch.channels_last)
    pcfg = model.pretrained_cfg
    return Backbone(model, model.num_features, bool(weights), tuple(pcfg["mean"]), tuple(pcfg["std"]))


class TextEncoder(nn.Module):
    """A transformers encoder pooled to one vector: the [CLS] token or the mask-weighted mean."""

    def __init__(self, encoder: nn.Module, pooling: str):
        super().__init__()
        if pooling not in tuple(Pooling):
            raise UserError(f"unknown model.backbone.pooling '{pooling}': choose one of {', '.join(Pooling)}")
        self.encoder, self.pooling = encoder, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == Pooling.CLS:
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def text_backbone(cfg) -> Backbone:
    """A transformers encoder and its tokenizer from a hub name, a local folder or pkg://package/folder."""
    from transformers import AutoConfig, AutoModel

    source = text_source(cfg)
    extra = {"num_hidden_layers": cfg.num_hidden_layers} if cfg.get("num_hidden_layers") else {}
    with loading(cfg):
        config = AutoConfig.from_pretrained(source, **extra)
        tokenizer = text_tokenizer(cfg)
        encoder = (
            AutoModel.from_pretrained(source, config=config)
            if is_pretrained(ModelKind.TEXT, cfg)
            else AutoModel.from_config(config)
        )
    return Backbone(
        TextEncoder(encoder, cfg.pooling),
        config.hidden_size,
        is_pretrained(ModelKind.TEXT, cfg),
        tokenizer=tokenizer,
    )


def text_tokenizer(cfg):
    """The text encoder's tokenizer alone (predict with an ONNX export of the encoder needs no more)."""
    from transformers import AutoTokenizer

    with loading(cfg):
        return AutoTokenizer.from_pretrained(text_source(cfg))


def text_source(cfg) -> str:
    if is_local(cfg.name):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model never needs the hub
        return str(resolve_path(cfg.name))
    return cfg.name


@contextmanager
def loading(cfg):
    """A text model or tokenizer that cannot be read: one line naming the fix."""
    try:
        yield
    except OSError as e:
        raise UserError(
            f"cannot load text model '{cfg.name}': {str(e).splitlines()[0]} (give a local folder "
            "or pkg://<package>/<folder> when offline)"
        ) from e


def is_local(name: str) -> bool:
    """True for a local path or pkg://package/path, False for a hub name."""
    return name.startswith(("pkg://", "/", "./", "~")) or os.path.exists(name)


def build_backbone(kind: str, cfg) -> Backbone | None:
    """The backbone for a model kind: image, text, or none for tabular."""
    if kind == ModelKind.IMAGE:
        return image_backbone(cfg)
    if kind == ModelKind.TEXT:
        return text_backbone(cfg)
    return None
