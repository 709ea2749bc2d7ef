"""Honest scores: members and methods are scored only on rows that nothing they learned has seen.

A member's `oof.csv` is already out of fold. A method that learns from the target (weighted, stacking) is
scored by nested CV over the same folds: for each fold k it is fitted on the other folds' OOF rows and
predicts fold k. Parameter-free methods (mean, rank, geometric, vote) have nothing to leak. Scores are the
mean and std over folds, plus the metric over all OOF rows; the final method is then refitted on all rows.
"""

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.ensembling.members import Stack
from pipeline.ensembling.methods import Method
from pipeline.metrics import Metric

log = logging.getLogger(__name__)


@dataclass
class Score:
    """A metric over folds (mean, std), over all OOF rows, and on the true test labels when known."""

    cv_mean: float
    cv_std: float
    oof: float
    folds: list[float]
    test: float | None = None


@dataclass
class Entry:
    """A leaderboard row: a member or a method, its scores and its test predictions."""

    kind: str  # "member" | "method"
    name: str
    score: Score
    test_pred: np.ndarray  # (test rows, columns)
    method: Method | None = None  # the method refitted on all OOF rows
    seconds: float = 0.0


def metric_input(pred: np.ndarray) -> np.ndarray:
    """The registry's convention: (rows, classes) probabilities, or (rows,) values for regression."""
    return pred[:, 0] if pred.shape[1] == 1 else pred


def score(metric: Metric, y: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> Score:
    """The metric on each fold's rows, and over all rows."""
    per_fold = [metric(y[folds == k], metric_input(pred[folds == k])) for k in np.unique(folds)]
    return Score(float(np.mean(per_fold)), float(np.std(per_fold)), metric(y, metric_input(pred)), per_fold)


def _rows(X: pd.DataFrame | None, mask: np.ndarray) -> pd.DataFrame | None:
    return None if X is None else X[mask]


def honest_oof(method: Method, stack: Stack) -> np.ndarray:
    """Out-of-fold predictions of `method`: a learning method is refitted without each fold to predict it."""
    if not method.learns:
        return method.predict(stack.oof, stack.X)
    pred = np.empty(stack.oof.shape[1:], np.float32)
    for k in np.unique(stack.folds):
        val = stack.folds == k
        fitted = copy.deepcopy(method).fit(stack.oof[:, ~val], stack.y[~val], _rows(stack.X, ~val))
        pred[val] = fitted.predict(stack.oof[:, val], _rows(stack.X, val))
    return pred


def _test_score(metric: Metric, stack: Stack, pred: np.ndarray) -> float | None:
    return None if stack.test_y is None else metric(stack.test_y, metric_input(pred))


def evaluate_members(stack: Stack, metric: Metric) -> list[Entry]:
    """Each member's CV over the same folds as the methods (so that the numbers compare)."""
    entries = []
    for name, oof, test in zip(stack.names, stack.oof, stack.test, strict=True):
        s = score(metric, stack.y, oof, stack.folds)
        s.test = _test_score(metric, stack, test)
        entries.append(Entry("member", name, s, test))
    return entries


def evaluate_method(method: Method, stack: Stack, metric: Metric) -> Entry:
    """A method's honest CV, then the method refitted on all OOF rows and its test predictions."""
    start = time.perf_counter()
    s = score(metric, stack.y, honest_oof(method, stack), stack.folds)
    final = copy.deepcopy(method).fit(stack.oof, stack.y, stack.X)
    test = final.predict(stack.test, stack.X_test)
    s.test = _test_score(metric, stack, test)
    seconds = time.perf_counter() - start
    log.info("%-9s CV %.5f +- %.5f (%.1f s)", method.name, s.cv_mean, s.cv_std, seconds)
    return Entry("method", method.name, s, test, final, seconds)


def choose(entries: list[Entry], metric: Metric) -> Entry:
    """The method with the best honest CV mean; ties keep the earlier (simpler) one."""
    best = None
    for e in entries:
        if e.kind == "method" and (best is None or metric.better(e.score.cv_mean, best.score.cv_mean)):
            best = e
    return best


def gain(chosen: Entry, entries: list[Entry], metric: Metric) -> tuple[Entry, float]:
    """The best single member and the chosen method's improvement over it (positive: better)."""
    members = [e for e in entries if e.kind == "member"]
    best = members[0]
    for e in members[1:]:
        if metric.better(e.score.cv_mean, best.score.cv_mean):
            best = e
    diff = chosen.score.cv_mean - best.score.cv_mean
    return best, diff if metric.greater_is_better else -diff
