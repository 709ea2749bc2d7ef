"""Monitors on tiny models where the numbers are known by hand, and their columns in a real run's history.csv."""

import functools
import logging

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from pipeline.advisor.thresholds import Thresholds
from pipeline.metrics import get_metric
from pipeline.prepare import prepare
from pipeline.training.job import train_job
from pipeline.training.loaders import array_loader
from pipeline.training.module import Net
from pipeline.training.monitors import DeadRelu, UpdateRatio, build_monitors

NO_SCHEDULE = OmegaConf.create({"name": "none"})


def fit(net: Net, arrays: dict, callbacks: list, batch_size: int, epochs: int = 1) -> Net:
    """Train `net` on `arrays` (validated on the same rows) without checkpoints, logger or progress bar."""
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(net, array_loader(arrays, batch_size, False), array_loader(arrays, 256, False))
    return net


def regression_net(head: nn.Module, lr: float, backbone: nn.Module | None = None) -> Net:
    sgd = functools.partial(torch.optim.SGD, lr=lr, momentum=0.0, weight_decay=0.0)
    metric = get_metric("rmse", "regression")
    return Net(head, nn.MSELoss(), metric, sgd, NO_SCHEDULE, backbone=backbone, backbone_lr_mult=0.1)


def test_update_ratio_of_one_sgd_step_equals_lr_grad_over_weights():
    """One full-batch SGD step on a linear model with MSE: delta w = lr * grad, computed here with numpy."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype(np.float32), rng.normal(size=16).astype(np.float32)
    w, b, lr = np.array([0.5, -1.0, 2.0], np.float32), np.float32(0.3), 0.05
    head = nn.Linear(3, 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w[None]))
        head.bias.fill_(float(b))
    net = fit(regression_net(head, lr), {"tab": x, "y": y}, [UpdateRatio(every_n_steps=1)], batch_size=16)
    residual = x @ w + b - y  # d/dw mean(residual^2) = 2/n x^T residual
    grad = np.append(2 / len(y) * x.T @ residual, 2 / len(y) * residual.sum())
    expected = lr * np.linalg.norm(grad) / np.linalg.norm(np.append(w, b))
    assert net.history[0]["update_ratio_head"] == pytest.approx(expected, rel=1e-4)


def test_update_ratio_per_group_and_layer_and_sampling():
    """A backbone group at 1/10 of the LR shows up beside the head; per-layer keys name the layers; one step in
    `every_n_steps` is measured (7 steps an epoch: steps 0, 3 and 6)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    monitor = UpdateRatio(every_n_steps=3, per_layer=True)
    snapshot, calls = monitor._snapshot, []
    monitor._snapshot = lambda *a: calls.append(1) or snapshot(*a)
    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(28, 1, 6, 6)).astype(np.float32), "y": rng.normal(size=28)}
    row = fit(regression_net(head, 0.01, backbone), arrays, [monitor], batch_size=4, epochs=2).history[-1]
    assert len(calls) == 6
    for key in ("head", "backbone", "head.0", "head.2", "backbone.0"):
        assert row[f"update_ratio_{key}"] > 0
    assert row["update_ratio_backbone"] < row["update_ratio_head"]


def test_dead_relu_fraction_of_units_that_never_activate(caplog):
    """Weights set so that 2 of 4 conv channels and 2 of 4 hidden units get a negative input on every row."""
    conv = nn.Conv2d(1, 4, 1)
    head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = 1.0  # channel 0 = x > 0; channels 1, 3: negative biases, dead
        conv.bias.copy_(torch.tensor([0.0, -1.0, 0.5, -2.0]))  # pooled features: (mean x, 0, 0.5, 0)
        head[0].weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]))
        head[0].bias.copy_(torch.tensor([-0.5, 0.0, -1.0, 0.1]))  # units 0 and 2 always negative: dead
    backbone = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = regression_net(head, 0.0, backbone)  # lr 0: the weights stay as set
    x = np.random.default_rng(0).uniform(0.01, 1, size=(32, 1, 3, 3)).astype(np.float32)
    caplog.set_level(logging.WARNING)
    row = fit(net, {"image": x, "y": np.zeros(32)}, [DeadRelu(include_backbone=True)], batch_size=8).history[0]
    assert row["dead_relu_head.1"] == pytest.approx(0.5)
    assert row["dead_relu_backbone.1"] == pytest.approx(0.5)
    head_only = fit(net, {"image": x, "y": np.zeros(32)}, [DeadRelu()], batch_size=8).history[-1]
    assert "dead_relu_head.1" in head_only and "dead_relu_backbone.1" not in head_only
    assert "50 % of the 4 units of ReLU layer 'head.1' never activated" in caplog.text


def test_ratio_warning_after_the_first_epoch_once_per_fold(caplog):
    """SGD at lr 0.5 on a linear model: ratios far above 1e-2; epoch 0 is Adam's transient and not warned."""
    rng = np.random.default_rng(0)
    arrays = {"tab": rng.normal(size=(16, 3)).astype(np.float32), "y": rng.normal(size=16)}
    caplog.set_level(logging.WARNING)
    torch.manual_seed(0)
    fit(regression_net(nn.Linear(3, 1), 0.5), arrays, [UpdateRatio(every_n_steps=1)], batch_size=4, epochs=3)
    warnings = [r.getMessage() for r in caplog.records if "update/parameter ratio" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("epoch 1:") and "too high" in warnings[0]


def test_ratio_warning_names_the_group_and_the_lr_change():
    low, high = Thresholds.of().ratio_advice("backbone", 2e-5, 3), Thresholds.of().ratio_advice("head", 0.05, 0)
    assert "'backbone'" in low and "too low" in low and "model.backbone_lr_mult x3-x10" in low
    assert "'head'" in high and "too high" in high and "optimizer.lr /3-/10" in high


def test_build_monitors_follows_the_config():
    assert [type(c) for c in build_monitors(OmegaConf.create({"every_n_steps": 5}))] == [UpdateRatio, DeadRelu]
    assert build_monitors(OmegaConf.create({"enabled": False})) == [] and build_monitors(None) == []
    assert [type(c) for c in build_monitors(OmegaConf.create({"dead_relu": False}))] == [UpdateRatio]


def test_monitor_columns_land_in_history_csv(make_comp, make_cfg, tmp_path):
    """A real tabular job: Linear-BN-ReLU x 2 -> `dead_relu_head.2`, `dead_relu_head.5`, `update_ratio_head`."""
    fast = ["trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.batch_size=16", "cv.n_folds=2"]
    cfg = make_cfg(make_comp(n_train=60), "model=tabular", "model.head.batch_norm=true", *fast)
    metrics = train_job(cfg, prepare(cfg))
    hist = pd.read_csv(tmp_path / "out" / "models" / metrics["model_id"] / "history.csv")
    assert {"update_ratio_head", "dead_relu_head.2", "dead_relu_head.5"} <= set(hist.columns)
    assert hist["update_ratio_head"].between(1e-6, 1).all() and hist["dead_relu_head.2"].between(0, 1).all()
