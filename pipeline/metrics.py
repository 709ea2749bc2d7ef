"""Metric registry: every metric knows its direction, the tasks it fits and what it reads.

Predictions follow one convention everywhere: for classification an (n, n_classes) array of probabilities
(binary included: two columns), for regression an (n,) array of values; `y` holds class indices or values.
Several targets: (n, targets) P(label) (multilabel, `y` 0/1) or values (multiregression); their metrics are the
mean over the targets (micro F1 pools them).
"""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm
from sklearn.model_selection import KFold

from pipeline.errors import UserError

CLASSIFICATION = ("binary", "multiclass")
THRESHOLDS = np.linspace(0.05, 0.95, 19)  # the per-label thresholds F1 may choose
THRESHOLD_FOLDS = 5  # F1's thresholds are chosen on 4/5 of the rows scored and applied to the other 1/5


@dataclass(frozen=True)
class Metric:
    """A scoring function with its direction and the tasks it applies to."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    tasks: tuple[str, ...]
    needs_proba: bool  # classification: scored on probabilities (else on predicted labels; multilabel: submitted so)
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


def _per_target(fn: Callable, both: bool = False) -> Callable[[np.ndarray, np.ndarray], float]:
    """The mean of a one-target metric over the columns; `both`: over the labels with both values among the rows
    scored (an AUC needs a positive and a negative row)."""

    def score(y: np.ndarray, p: np.ndarray) -> float:
        cols = [k for k in range(y.shape[1]) if not both or len(np.unique(y[:, k])) > 1]
        return float(np.mean([fn(y[:, k], p[:, k]) for k in cols])) if cols else float("nan")

    return score


def _f1_by_threshold(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(thresholds, labels) of true positives, false positives and false negatives stacked: (3, T, K)."""
    hit = p[None] >= THRESHOLDS[:, None, None]  # (T, n, K)
    pos = y[None].astype(bool)
    return np.stack([(hit & pos).sum(1), (hit & ~pos).sum(1), (~hit & pos).sum(1)])


def choose_thresholds(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per label, the threshold with the best F1 on these rows (ties: the lowest)."""
    tp, fp, fn = _f1_by_threshold(y, p)
    return THRESHOLDS[(2 * tp / np.maximum(2 * tp + fp + fn, 1)).argmax(0)]


def _f1_multilabel(average: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """F1 of labels thresholded per label, each row by thresholds chosen on the other rows (cross-fitted): choosing
    them on the rows scored would flatter every member and ensemble alike."""

    def score(y: np.ndarray, p: np.ndarray) -> float:
        labels = np.zeros_like(y)
        for rest, part in KFold(min(THRESHOLD_FOLDS, len(y)), shuffle=True, random_state=0).split(y):
            labels[part] = p[part] >= choose_thresholds(y[rest], p[rest])
        return skm.f1_score(y, labels, average=average, zero_division=0)

    return score


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    return skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])


_C, _R = CLASSIFICATION, ("regression",)
_ML, _MR = ("multilabel",), ("multiregression",)
# several targets: the same names, scored per target and averaged
MULTI_METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("roc_auc", _per_target(skm.roc_auc_score, both=True), True, _ML, True),
        Metric("logloss", _per_target(_logloss), False, _ML, True),
        Metric("f1_micro", _f1_multilabel("micro"), True, _ML, False),  # scored on probabilities, submitted as 0/1
        Metric("f1_macro", _f1_multilabel("macro"), True, _ML, False),
        Metric("rmse", _per_target(skm.root_mean_squared_error), False, _MR, False),
        Metric("mae", _per_target(skm.mean_absolute_error), False, _MR, False),
        Metric("r2", _per_target(skm.r2_score), True, _MR, False),
        Metric("rmsle", _per_target(_rmsle), False, _MR, False),
    ]
}
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
DEFAULT_METRIC = {
    "binary": "roc_auc",
    "multiclass": "accuracy",
    "regression": "rmse",
    "multilabel": "roc_auc",
    "multiregression": "rmse",
}


NEEDS = {"proba": _C + _ML, "label": _C + _ML, "value": _R + _MR}
CUSTOM = "data.metric={_target_: mypkg.metrics.my_score, greater_is_better: true, needs: proba}"


def _inputs(needs: str, task: str) -> Callable[[np.ndarray], np.ndarray]:
    """What a custom metric reads: P(class 1) (binary) or (n, classes) probabilities, class indices, or values;
    multilabel: (n, labels) P(label), or 0/1 at 0.5."""
    if task == "multilabel":
        return (lambda p: (p >= 0.5).astype(int)) if needs == "label" else (lambda p: p)
    if needs == "proba":
        return lambda p: p[:, 1] if p.shape[1] == 2 else p
    return _labels if needs == "label" else lambda p: p


def custom_metric(spec: Mapping, task: str = "") -> Metric:
    """`data.metric={_target_: pkg.module.function, greater_is_better: ..., needs: proba|label|value}`: the function
    takes (y_true, y_pred); y_true holds class indices (the probability columns' order) or values (several targets:
    one column each)."""
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
    take = _inputs(needs, task)

    def score(y: np.ndarray, p: np.ndarray) -> float:
        value = float(fn(y, take(p)))
        if not np.isfinite(value):
            raise UserError(f"data.metric {target} returned {value} on {len(y)} rows: it must return a finite number")
        return value

    return Metric(target, score, spec["greater_is_better"], NEEDS[needs], needs == "proba", spec)


def get_metric(name: str | Mapping, task: str) -> Metric:
    """Look up `name` (or the task's default for `auto`), or build a custom one; check that it fits `task`."""
    if isinstance(name, Mapping):
        metric = custom_metric(name, task)
        if task not in metric.tasks:
            want = "value" if task in _R + _MR else "proba or label"
            raise UserError(f"data.metric {metric.name} reads needs={metric.spec['needs']}: a {task} task needs {want}")
        return metric
    if name in (None, "auto"):
        name = DEFAULT_METRIC[task]
    known = MULTI_METRICS if task in _ML + _MR else METRICS
    if name not in METRICS | MULTI_METRICS:
        raise UserError(f"unknown data.metric '{name}': choose one of {', '.join(METRICS | MULTI_METRICS)}")
    metric = known.get(name)
    if metric is None or task not in metric.tasks:
        fits = [m for m, v in known.items() if task in v.tasks]
        raise UserError(f"data.metric '{name}' does not fit a {task} task: choose one of {', '.join(fits)}")
    return metric
