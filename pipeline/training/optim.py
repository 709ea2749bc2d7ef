"""Optimizer parameter groups (reduced backbone LR when finetuning, optionally decayed per layer), LR schedules and
losses."""

import math
import re

import torch
from torch import nn

from pipeline.choices import REGRESSIONS, Finetune, Loss, ModelKind, Scheduler
from pipeline.errors import UserError

LOSSES = tuple(Loss)
SCHEDULES = tuple(Scheduler)
LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")  # BERT/RoBERTa/DeBERTa `encoder.layer.3.`, ModernBERT `layers.3.`


def param_groups(
    backbone: nn.Module | None,
    head: nn.Module,
    lr: float,
    backbone_lr_mult: float,
    layer_decay: float | None = None,
) -> list[dict]:
    """Head at `lr`; backbone at `lr * backbone_lr_mult` (~0.1: pretrained weights need only small steps), per
    encoder layer when `layer_decay` is set (see `layer_decay_groups`)."""
    groups = [{"name": "head", "params": list(head.parameters()), "lr": lr}]
    if backbone is None:
        return groups
    if layer_decay is None:
        return groups + [{"name": "backbone", "params": list(backbone.parameters()), "lr": lr * backbone_lr_mult}]
    return groups + layer_decay_groups(backbone, lr * backbone_lr_mult, layer_decay)


def layer_decay_groups(backbone: nn.Module, lr: float, decay: float) -> list[dict]:
    """Layer-wise LR decay, as timm's `param_groups_layer_decay` but for transformers' parameter names.

    The top encoder layer trains at `lr`, each layer below at `decay` times the one above, the embeddings lowest
    (6 layers, decay 0.8: 0.8**6 = 0.26 x lr): low layers hold general features that need the smallest changes.
    Parameters after the layers (e.g. the pooler) stay at `lr`. Groups: backbone, backbone_layer<i>, ...,
    backbone_embeddings (history.csv: lr_<group>).
    """
    if not 0 < decay <= 1:
        raise UserError(f"model.layer_decay={decay}: expected a factor in (0, 1] (e.g. 0.8), or null for none")
    by_layer: dict[int | None, list[nn.Parameter]] = {}
    for name, p in backbone.named_parameters():
        by_layer.setdefault(_layer_index(name), []).append(p)
    layers = [i for i in by_layer if i is not None and i >= 0]
    if not layers:
        raise UserError(
            f"model.layer_decay needs a transformer encoder with numbered layers ('...layer.<i>.'); "
            f"{type(backbone).__name__} has none: set model.layer_decay=null"
        )
    n = max(layers) + 1
    groups = []
    for i in sorted(by_layer, key=lambda i: n if i is None else i, reverse=True):  # top first
        depth = 0 if i is None else n - 1 - i  # the embeddings (-1) sit at depth n
        name = "backbone" if i is None else "backbone_embeddings" if i < 0 else f"backbone_layer{i}"
        groups.append({"name": name, "params": by_layer[i], "lr": lr * decay**depth})
    return groups


def _layer_index(name: str) -> int | None:
    """The encoder layer a parameter belongs to; -1 for the embeddings, None for anything else."""
    m = LAYER.search(name)
    if m:
        return int(m.group(1))
    return -1 if "embed" in name else None


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> dict | None:
    """A Lightning lr_scheduler config for `scheduler.name`, or None for a constant LR (the default)."""
    name = cfg.name
    if name not in SCHEDULES:
        raise UserError(f"unknown scheduler '{name}': choose one of {', '.join(SCHEDULES)}")
    total = max(1, steps_per_epoch * epochs)
    if name == "none":
        return None
    if name == "cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}
    if name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_epochs, gamma=cfg.gamma)
        return {"scheduler": sched, "interval": "epoch"}
    if name == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.gamma, patience=cfg.patience)
        return {"scheduler": sched, "interval": "epoch", "monitor": "val_loss"}
    max_lr = [g["lr"] for g in optimizer.param_groups]
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total)
    return {"scheduler": sched, "interval": "step"}


def build_loss(name: str, task: str, label_smoothing: float = 0.0) -> nn.Module:
    """The training loss; `auto` = cross-entropy for classes, MSE for regression, binary cross-entropy per label
    for several labels (one sigmoid output each)."""
    if name not in LOSSES:
        raise UserError(f"unknown model.loss '{name}': choose one of {', '.join(LOSSES)}")
    if name == "auto":
        name = {"regression": "mse", "multiregression": "mse", "multilabel": "bce"}.get(task, "cross_entropy")
    regression = name in ("mse", "mae", "smooth_l1")
    fits = regression == (task in REGRESSIONS) and (name != "bce" or task in ("binary", "multilabel"))
    if not fits or (name == "cross_entropy" and task == "multilabel"):
        raise UserError(f"model.loss={name} does not fit a {task} task")
    return {
        "cross_entropy": lambda: nn.CrossEntropyLoss(label_smoothing=label_smoothing),
        "bce": nn.BCEWithLogitsLoss,
        "mse": nn.MSELoss,
        "mae": nn.L1Loss,
        "smooth_l1": nn.SmoothL1Loss,
    }[name]()


def build_mixup(m, n_classes: int, loss: nn.Module):
    """timm's `Mixup` for `model.mixup` / `model.cutmix` (Beta(alpha, alpha) mixing weights; 0: off; both on: one
    of the two per batch, at random), or None when both are 0. Mixed images get mixed one-hot labels, so it needs a
    cross-entropy loss over classes and images that reach the network (a finetune, not frozen embeddings)."""
    mixup, cutmix = float(m.get("mixup") or 0), float(m.get("cutmix") or 0)
    if mixup == 0 and cutmix == 0:
        return None
    if m.kind != ModelKind.IMAGE or m.get("finetune") == Finetune.FROZEN or not isinstance(loss, nn.CrossEntropyLoss):
        raise UserError(
            f"model.mixup={mixup:g} / model.cutmix={cutmix:g} mix images and their class labels: they need "
            f"model=image with model.finetune=full or probe_then_full and a classification task with "
            f"model.loss=auto or cross_entropy (got model.kind={m.kind}, model.finetune={m.get('finetune')}, "
            f"{type(loss).__name__}); set both to 0"
        )
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=m.label_smoothing, num_classes=n_classes)
