"""Metric registry: every metric knows its direction, the tasks it fits and what it reads.

Predictions follow one convention everywhere: for classification an (n, n_classes) array of probabilities
(binary included: two columns), for regression an (n,) array of values; `y` holds class indices or values.
"""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from pipeline.errors import UserError

CLASSIFICATION = ("binary", "multiclass")


@dataclass(frozen=True)
class Metric:
    """A scoring function with its direction and the tasks it applies to."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    tasks: tuple[str, ...]
    needs_proba: bool  # classification: scored on probabilities (else on predicted labels)
    spec: str | dict = ""  # what data.metric and competition.json hold: the name, or a custom metric's mapping

    @property
    def saved(self) -> str | dict:
        return self.spec or self.name

    def __call__(self, y: np.ndarray, pred: np.ndarray) -> float:
        return float(self.fn(np.asarray(y), np.asarray(pred)))

    def better(self, a: float, b: float) -> bool:
        """True when score `a` is strictly better than `b`."""
        return a > b if self.greater_is_better else a < b


def _labels(p: np.ndarray) -> np.ndarray:
    return p.argmax(axis=1)


def _normalized(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, None)
    return p / p.sum(axis=1, keepdims=True)


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    if p.shape[1] == 2:
        return skm.roc_auc_score(y, p[:, 1])
    return skm.roc_auc_score(y, _normalized(p), multi_class="ovr", labels=np.arange(p.shape[1]))


def _rmsle(y: np.ndarray, p: np.ndarray) -> float:
    if (y < 0).any():
        raise UserError("metric 'rmsle' needs a non-negative target: choose data.metric=rmse")
    return skm.root_mean_squared_log_error(y, np.clip(p, 0, None))


_C, _R = CLASSIFICATION, ("regression",)
METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", lambda y, p: skm.accuracy_score(y, _labels(p)), True, _C, False),
        Metric("balanced_accuracy", lambda y, p: skm.balanced_accuracy_score(y, _labels(p)), True, _C, False),
        Metric("f1_macro", lambda y, p: skm.f1_score(y, _labels(p), average="macro"), True, _C, False),
        Metric("qwk", lambda y, p: skm.cohen_kappa_score(y, _labels(p), weights="quadratic"), True, _C, False),
        Metric(
            "logloss",
            lambda y, p: skm.log_loss(y, _normalized(p), labels=np.arange(p.shape[1])),
            False,
            _C,
            True,
        ),
        Metric("roc_auc", _roc_auc, True, _C, True),
        Metric("rmse", skm.root_mean_squared_error, False, _R, False),
        Metric("mae", skm.mean_absolute_error, False, _R, False),
        Metric("r2", skm.r2_score, True, _R, False),
        Metric("rmsle", _rmsle, False, _R, False),
    ]
}
DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}


NEEDS = {"proba": CLASSIFICATION, "label": CLASSIFICATION, "value": ("regression",)}
CUSTOM = "data.metric={_target_: mypkg.metrics.my_score, greater_is_better: true, needs: proba}"


def _inputs(needs: str) -> Callable[[np.ndarray], np.ndarray]:
    """What a custom metric reads: P(class 1) (binary) or (n, classes) probabilities, class indices, or values."""
    if needs == "proba":
        return lambda p: p[:, 1] if p.shape[1] == 2 else p
    return _labels if needs == "label" else lambda p: p


def custom_metric(spec: Mapping) -> Metric:
    """`data.metric={_target_: pkg.module.function, greater_is_better: ..., needs: proba|label|value}`: the function
    takes (y_true, y_pred); y_true holds class indices (the probability columns' order) or values."""
    spec = {k: spec.get(k) for k in ("_target_", "greater_is_better", "needs")}
    target, needs = str(spec["_target_"] or ""), spec["needs"]
    if "." not in target or not isinstance(spec["greater_is_better"], bool) or needs not in NEEDS:
        raise UserError(
            "data.metric needs _target_, greater_is_better (true/false) and needs (proba, label or value), "
            f"as in {CUSTOM}"
        )
    module, _, attr = target.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(
            f"data.metric._target_={target} does not import ({e}): install its package or add it to PYTHONPATH"
        ) from e
    take = _inputs(needs)

    def score(y: np.ndarray, p: np.ndarray) -> float:
        value = float(fn(y, take(p)))
        if not np.isfinite(value):
            raise UserError(f"data.metric {target} returned {value} on {len(y)} rows: it must return a finite number")
        return value

    return Metric(target, score, spec["greater_is_better"], NEEDS[needs], needs == "proba", spec)


def get_metric(name: str | Mapping, task: str) -> Metric:
    """Look up `name` (or the task's default for `auto`), or build a custom one; check that it fits `task`."""
    if isinstance(name, Mapping):
        metric = custom_metric(name)
        if task not in metric.tasks:
            want = "value" if task == "regression" else "proba or label"
            raise UserError(f"data.metric {metric.name} reads needs={metric.spec['needs']}: a {task} task needs {want}")
        return metric
    if name in (None, "auto"):
        name = DEFAULT_METRIC[task]
    if name not in METRICS:
        raise UserError(f"unknown data.metric '{name}': choose one of {', '.join(METRICS)}")
    metric = METRICS[name]
    if task not in metric.tasks:
        fits = [m for m, v in METRICS.items() if task in v.tasks]
        raise UserError(f"data.metric '{name}' does not fit a {task} task: choose one of {', '.join(fits)}")
    return metric
