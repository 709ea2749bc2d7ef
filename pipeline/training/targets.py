"""Regression target transforms (`model.target_transform`) and predictions back in the target's units."""

import numpy as np

from pipeline.choices import TargetTransform, Task
from pipeline.errors import UserError

# model.target_transform: (forward, inverse). Models train on forward(y); their predictions go through inverse
# before they are scored or written, so oof.csv and test.csv stay in the target's units.
TARGET_TRANSFORMS = {TargetTransform.NONE: (lambda y: y, lambda p: p), TargetTransform.LOG1P: (np.log1p, np.expm1)}


def target_transform(cfg, comp) -> tuple:
    """(forward, inverse) of `model.target_transform`, checked against the task and the target's range."""
    name = cfg.model.get("target_transform", TargetTransform.NONE)
    if name not in TARGET_TRANSFORMS:
        raise UserError(f"unknown model.target_transform '{name}': choose one of {', '.join(TARGET_TRANSFORMS)}")
    if name != TargetTransform.NONE and comp.task != Task.REGRESSION:
        raise UserError(f"model.target_transform={name} is for regression targets, not a {comp.task} task: use none")
    if name == TargetTransform.LOG1P and comp.y.min() < 0:
        raise UserError(
            f"model.target_transform=log1p needs a target >= 0, but '{comp.target}' goes down to {comp.y.min():g}: "
            "use none"
        )
    return TARGET_TRANSFORMS[name]


def to_target(pred: np.ndarray, y_range: tuple | None, inverse) -> np.ndarray:
    """Regression predictions clipped to the fold's training targets (no head extrapolates past what it saw),
    then back in the target's units; classification probabilities as they are."""
    return pred if y_range is None else inverse(np.clip(pred, *y_range))
