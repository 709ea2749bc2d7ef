"""Heads on top of features: linear or MLP (torch), Xavier-initialized with small biases."""

import logging

from torch import nn

from pipeline.errors import UserError

log = logging.getLogger(__name__)
ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
BIAS_INIT = 0.01  # small positive bias: ReLUs start active, and no layer starts all-zero


def init_layer(layer: nn.Linear) -> nn.Linear:
    """Xavier-uniform weights (variance kept across layers) and a small constant bias."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.constant_(layer.bias, BIAS_INIT)
    return layer


def build_head(cfg, in_dim: int, out_dim: int) -> nn.Module:
    """`linear`, or `mlp` with cfg.hidden widths, cfg.activation, optional batch norm and dropout."""
    if cfg.type == "linear":
        return init_layer(nn.Linear(in_dim, out_dim))
    if cfg.type != "mlp":
        raise UserError(f"unknown model.head.type '{cfg.type}': choose linear, mlp or sklearn")
    if cfg.activation not in ACTIVATIONS:
        raise UserError(f"unknown model.head.activation '{cfg.activation}': choose one of {', '.join(ACTIVATIONS)}")
    if cfg.activation == "sigmoid":
        log.warning("model.head.activation=sigmoid in hidden layers saturates and slows learning; prefer relu")
    if cfg.batch_norm and cfg.dropout > 0:
        log.warning(
            "model.head uses dropout=%s together with batch norm: they interfere; batch norm alone is "
            "usually enough (set model.head.dropout=0)",
            cfg.dropout,
        )
    layers: list[nn.Module] = []
    for width in cfg.hidden:
        layers.append(init_layer(nn.Linear(in_dim, width)))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        in_dim = width
    layers.append(init_layer(nn.Linear(in_dim, out_dim)))
    return nn.Sequential(*layers)
