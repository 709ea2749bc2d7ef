"""Heads on top of features: linear or MLP (torch), Xavier-initialized with small biases."""

from torch import nn

from pipeline.choices import Activation, HeadInit, HeadType
from pipeline.errors import UserError

ACTIVATIONS = {  # the names are pipeline/choices.py's; this maps each to its layer
    Activation.RELU: nn.ReLU,
    Activation.LEAKY_RELU: nn.LeakyReLU,
    Activation.GELU: nn.GELU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
}
BIAS_INIT = 0.01  # small positive bias: ReLUs start active, and no layer starts all-zero


INITS = {  # model.head.init (set with +model.head.init=...): xavier is the default and the rule of thumb
    HeadInit.XAVIER: nn.init.xavier_uniform_,
    HeadInit.KAIMING: lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    HeadInit.ZEROS: nn.init.zeros_,  # experiments only: symmetric units never differentiate (the advisor flags it)
    HeadInit.CONSTANT: lambda w: nn.init.constant_(w, BIAS_INIT),  # experiments only, as zeros
}


def init_layer(layer: nn.Linear, how: str = HeadInit.XAVIER) -> nn.Linear:
    """Xavier-uniform weights (variance kept across layers) and a small constant bias, or `how` from INITS."""
    if how not in INITS:
        raise UserError(f"unknown model.head.init '{how}': choose one of {', '.join(INITS)}")
    INITS[how](layer.weight)
    nn.init.constant_(layer.bias, 0.0 if how == HeadInit.ZEROS else BIAS_INIT)
    return layer


def build_head(cfg, in_dim: int, out_dim: int) -> nn.Module:
    """`linear`, or `mlp` with cfg.hidden widths, cfg.activation, optional batch norm and dropout."""
    how = cfg.get("init", HeadInit.XAVIER)
    if cfg.type == HeadType.LINEAR:
        return init_layer(nn.Linear(in_dim, out_dim), how)
    if cfg.type != HeadType.MLP:
        raise UserError(f"unknown model.head.type '{cfg.type}': choose linear, mlp or sklearn")
    if cfg.activation not in ACTIVATIONS:
        raise UserError(f"unknown model.head.activation '{cfg.activation}': choose one of {', '.join(ACTIVATIONS)}")
    # sigmoid hidden units and dropout beside batch norm are the advisor's findings (pipeline/advisor/rules.py)
    layers: list[nn.Module] = []
    for width in cfg.hidden:
        layers.append(init_layer(nn.Linear(in_dim, width), how))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        in_dim = width
    layers.append(init_layer(nn.Linear(in_dim, out_dim), how))
    return nn.Sequential(*layers)
