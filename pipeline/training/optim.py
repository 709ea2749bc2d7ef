"""Optimizer parameter groups (reduced backbone LR when finetuning), LR schedules and losses."""

import math

import torch
from torch import nn

from pipeline.errors import UserError

LOSSES = ("auto", "cross_entropy", "bce", "mse", "mae", "smooth_l1")
SCHEDULES = ("none", "cosine", "step", "plateau", "onecycle")


def param_groups(backbone: nn.Module | None, head: nn.Module, lr: float, backbone_lr_mult: float) -> list[dict]:
    """Head at `lr`; backbone at `lr * backbone_lr_mult` (~0.1: pretrained weights need only small steps)."""
    groups = [{"name": "head", "params": list(head.parameters()), "lr": lr}]
    if backbone is not None:
        groups.append({"name": "backbone", "params": list(backbone.parameters()), "lr": lr * backbone_lr_mult})
    return groups


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
    """The training loss; `auto` = cross-entropy for classes, MSE for regression."""
    if name not in LOSSES:
        raise UserError(f"unknown model.loss '{name}': choose one of {', '.join(LOSSES)}")
    if name == "auto":
        name = "mse" if task == "regression" else "cross_entropy"
    regression = name in ("mse", "mae", "smooth_l1")
    if regression != (task == "regression") or (name == "bce" and task != "binary"):
        raise UserError(f"model.loss={name} does not fit a {task} task")
    return {
        "cross_entropy": lambda: nn.CrossEntropyLoss(label_smoothing=label_smoothing),
        "bce": nn.BCEWithLogitsLoss,
        "mse": nn.MSELoss,
        "mae": nn.L1Loss,
        "smooth_l1": nn.SmoothL1Loss,
    }[name]()
