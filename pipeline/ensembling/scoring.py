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
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from pipeline.ensembling.members import Stack
from pipeline.ensembling.methods import Method
from pipeline.errors import UserError
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


def _fit_predict(method: Method, stack: Stack, train: np.ndarray | slice, P: np.ndarray, X) -> tuple:
    """A copy of `method` fitted on the `train` rows' OOF predictions, and its prediction of `P`."""
    fitted = copy.deepcopy(method).fit(stack.oof[:, train], stack.y[train], _rows(stack.X, train))
    return fitted, fitted.predict(P, X)


def _test_score(metric: Metric, stack: Stack, pred: np.ndarray) -> float | None:
    return None if stack.test_y is None else metric(stack.test_y, metric_input(pred))


def _member_entry(name: str, oof: np.ndarray, test: np.ndarray, stack: Stack, metric: Metric) -> Entry:
    s = score(metric, stack.y, oof, stack.folds)
    s.test = _test_score(metric, stack, test)
    return Entry("member", name, s, test)


def evaluate_members(stack: Stack, metric: Metric, n_jobs: int = 1) -> list[Entry]:
    """Each member's CV over the same folds as the methods (so that the numbers compare), in `n_jobs` threads."""
    members = zip(stack.names, stack.oof, stack.test, strict=True)
    return Parallel(n_jobs=n_jobs, prefer="threads")(delayed(_member_entry)(*m, stack, metric) for m in members)


def evaluate_method(method: Method, stack: Stack, metric: Metric, n_jobs: int = 1) -> Entry:
    """A method's honest CV, then the method refitted on all OOF rows and its test predictions.

    A learning method is refitted without each fold to predict that fold (nested CV over the same folds); those
    fits and the final one on all rows run in `n_jobs` threads (numpy and sklearn release the GIL)."""
    start = time.perf_counter()
    if method.learns:
        folds = np.unique(stack.folds)
        jobs = [(stack.folds != k, stack.oof[:, stack.folds == k], _rows(stack.X, stack.folds == k)) for k in folds]
        jobs.append((slice(None), stack.test, stack.X_test))
        # one BLAS thread per fit: the products are skinny (rows x inputs @ inputs x classes) and gain little
        # from threads, while on a machine busy with training jobs OpenBLAS threads spin-wait: 6 stacking fits
        # on 20k rows x 100 inputs took 23.6 s with 2 BLAS threads and 1.1 s with 1 (2 CPUs, load average 7)
        with threadpool_limits(limits=1, user_api="blas"):
            done = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(_fit_predict)(method, stack, *job) for job in jobs)
        oof = np.empty(stack.oof.shape[1:], np.float32)
        for k, (_, pred) in zip(folds, done[:-1], strict=True):
            oof[stack.folds == k] = pred
        final, test = done[-1]
    else:
        oof = method.predict(stack.oof, stack.X)
        final, test = _fit_predict(method, stack, slice(None), stack.test, stack.X_test)
    s = score(metric, stack.y, oof, stack.folds)
    s.test = _test_score(metric, stack, test)
    seconds = time.perf_counter() - start
    log.info("%-9s CV %.5f +- %.5f (%.1f s)", method.name, s.cv_mean, s.cv_std, seconds)
    return Entry("method", method.name, s, test, final, seconds)


SELECTIONS = ("best", "one_se")


def check_select(select: str) -> None:
    if select not in SELECTIONS:
        raise UserError(f"unknown ensemble.select '{select}': choose one of {', '.join(SELECTIONS)}")


def choose(entries: list[Entry], metric: Metric, select: str = "best") -> Entry:
    """The method with the best honest CV mean (ties keep the earlier, simpler one); with `one_se`, the simplest
    method whose per-fold scores trail the best one's by no more than one standard error of their difference
    (Breiman's one-standard-error rule: a CV gain smaller than its own noise does not pay for complexity)."""
    check_select(select)
    methods = [e for e in entries if e.kind == "method"]
    best = methods[0]
    for e in methods[1:]:
        if metric.better(e.score.cv_mean, best.score.cv_mean):
            best = e
    if select == "best" or len(best.score.folds) < 2:
        return best
    sign = 1 if metric.greater_is_better else -1
    for e in methods:  # the registry's order: simplest first
        lag = sign * (np.array(best.score.folds) - np.array(e.score.folds))
        if lag.mean() <= lag.std(ddof=1) / np.sqrt(len(lag)):
            return e
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
