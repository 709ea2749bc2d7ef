"""Non-negative member weights that sum to 1, fitted on out-of-fold predictions.

`caruana`: ensemble selection with replacement (Caruana et al. 2004, as in AutoGluon's EnsembleSelection):
start empty, and at each step add the member whose addition gives the best metric of the running average;
a member can be added many times. The weights are the counts of the best prefix of that trajectory.
Each step scores every member as a candidate over all rows at once: numpy over rows, a loop over members.

`scipy`: SLSQP on the simplex, minimizing logloss (classification) or squared error (regression) with their
analytic gradients: smooth stand-ins, because accuracy or AUC are flat almost everywhere in the weights.
"""

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import rankdata

from pipeline.ensembling.methods import ALL_TASKS, EPS, Method
from pipeline.errors import UserError
from pipeline.metrics import Metric

OPTIMIZERS = ("caruana", "scipy")
CHUNK_BYTES = 64 << 20  # candidates scored per batch: 16 members x 100k rows x 10 classes x 4 bytes = 64 MB

# score of every candidate `(total + P[j]) / step`, as an array over members
Scorer = Callable[[np.ndarray, int], np.ndarray]


def _per_chunk(P: np.ndarray, rows: int) -> int:
    """How many members' candidates to score in one batch of at most CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(rows * P.shape[2] * P.itemsize, 1))


def _accuracy(P: np.ndarray, y: np.ndarray) -> Scorer:
    # classes as the leading axis: each candidate's top class is then elementwise maxima of contiguous row
    # vectors, ~8x faster than argmax over a last axis of 10 classes
    n = P.shape[1]
    PT = np.ascontiguousarray(P.transpose(0, 2, 1))  # (members, classes, rows)
    true = P[:, np.arange(n), y]  # (members, rows): each member's value for the true class
    # 0 for the classes before the true one, -inf after: argmax gives a tie to the earlier class
    earlier = np.where(np.arange(P.shape[2])[:, None] < y[None], 0, -np.inf).astype(np.float32)

    def scores(total: np.ndarray, step: int) -> np.ndarray:
        # a member adds at most 1 to any class, so rows whose top class leads the runner-up by more than 1
        # keep their label whatever is added: only the contested rows need every candidate's top class
        top2 = np.partition(total, -2, axis=1)[:, -2:]
        rows = np.flatnonzero(top2[:, 1] - top2[:, 0] <= 1.0)
        fixed = 0
        if len(rows) > n // 4:  # most rows: computing them all is cheaper than gathering them
            rows = slice(None)
        else:
            settled = np.ones(n, bool)
            settled[rows] = False
            fixed = np.count_nonzero(total[settled].argmax(axis=1) == y[settled])
        T, E = np.ascontiguousarray(total[rows].T), earlier[:, rows]
        base, buf, hits = total[np.arange(n)[rows], y[rows]], np.empty_like(T), np.empty(len(P))
        for j in range(len(P)):
            np.add(T, PT[j][:, rows], out=buf)
            t = base + true[j, rows]  # the same float32 sums as buf's true-class entries: equality is exact
            hit = buf.max(axis=0) == t
            hit &= np.add(buf, E, out=buf).max(axis=0) < t
            hits[j] = np.count_nonzero(hit)
        return (fixed + hits) / n

    return scores


def _logloss(P: np.ndarray, y: np.ndarray) -> Scorer:
    true = P[:, np.arange(len(y)), y].astype(np.float64)  # (members, rows): logloss reads only the true class
    sums = P.sum(axis=2, dtype=np.float64)  # row sums, to renormalize as the metric does

    def scores(total: np.ndarray, step: int) -> np.ndarray:
        t = total[np.arange(len(y)), y] + true
        return -np.log(np.maximum(t, EPS) / (total.sum(axis=1) + sums)).mean(axis=1)

    return scores


def _binary_auc(P: np.ndarray, y: np.ndarray) -> Scorer:
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())

    def scores(total: np.ndarray, step: int) -> np.ndarray:
        # Mann-Whitney: AUC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with
        # tied scores sharing their average rank, as roc_auc_score counts ties as half
        out, k = np.empty(len(P)), _per_chunk(P, len(y))
        for a in range(0, len(P), k):
            ranks = rankdata(total[:, 1] + P[a : a + k, :, 1], axis=1)
            out[a : a + k] = (ranks[:, pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return out

    return scores


def _regression(P: np.ndarray, y: np.ndarray, name: str) -> Scorer:
    values = P[:, :, 0]

    def scores(total: np.ndarray, step: int) -> np.ndarray:
        err = (total[:, 0] + values) / step - y
        if name == "mae":
            return np.abs(err).mean(axis=1)
        mse = (err.astype(np.float64) ** 2).mean(axis=1)
        return np.sqrt(mse) if name == "rmse" else 1 - mse / y.var()

    return scores


def batch_scorer(metric: Metric, P: np.ndarray, y: np.ndarray) -> Scorer:
    """Vectorized equivalents of the registry's metrics where they exist; the metric itself otherwise (always for
    several targets, whose metrics share the names)."""
    one_target = y.ndim == 1
    if one_target and metric.name == "accuracy":
        return _accuracy(P, y)
    if one_target and metric.name == "logloss":
        return _logloss(P, y)
    if one_target and metric.name == "roc_auc" and P.shape[2] == 2 and 0 < y.sum() < len(y):
        return _binary_auc(P, y)
    if one_target and metric.name in ("rmse", "mae", "r2") and P.shape[2] == 1:
        return _regression(P, y, metric.name)

    def scores(total: np.ndarray, step: int) -> np.ndarray:
        cands = ((total + member) / step for member in P)
        return np.array([metric(y, c[:, 0] if c.shape[1] == 1 else c) for c in cands])

    return scores


def caruana(P: np.ndarray, y: np.ndarray, metric: Metric, iterations: int, patience: int) -> tuple:
    """Greedy selection with replacement: (weights of the best prefix, trajectory [(member index, score)])."""
    scorer, total = batch_scorer(metric, P, y), np.zeros(P.shape[1:], np.float32)
    counts, best_counts, best, since = np.zeros(len(P)), None, None, 0
    trajectory = []
    for step in range(1, iterations + 1):
        scores = scorer(total, step)
        j = int(np.nanargmax(scores) if metric.greater_is_better else np.nanargmin(scores))  # ties: first
        total += P[j]
        counts[j] += 1
        trajectory.append((j, float(scores[j])))
        if best is None or metric.better(scores[j], best):
            best, best_counts, since = scores[j], counts.copy(), 0
        else:
            since += 1
            if since >= patience:  # the best prefix is kept anyway: more steps only cost time
                break
    return best_counts / best_counts.sum(), trajectory


def scipy_weights(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Simplex weights minimizing logloss (classification) or squared error (regression), by SLSQP."""
    m, n = P.shape[:2]
    if P.shape[2] == 1:
        A = P[:, :, 0].astype(np.float64)

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            err = w @ A - y
            return float((err**2).mean()), 2 * A @ err / n
    else:
        A = P[:, np.arange(n), y].astype(np.float64)  # each member's probability of the true class

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            p = np.maximum(w @ A, EPS)
            return float(-np.log(p).mean()), -A @ (1 / p) / n

    res = minimize(
        loss,
        np.full(m, 1 / m),
        jac=True,
        method="SLSQP",
        bounds=[(0, 1)] * m,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(m)},
    )
    w = np.clip(res.x, 0, None)
    return w / w.sum()


class Weighted(Method):
    """Non-negative weights summing to 1 (Caruana selection, or scipy): when members differ in quality."""

    name = "weighted"
    tasks = ALL_TASKS
    learns = True

    def __init__(self, metric: Metric, optimizer: str = "caruana", iterations: int = 50, patience: int = 10):
        if optimizer not in OPTIMIZERS:
            raise UserError(f"unknown ensemble.weighted.optimizer '{optimizer}': choose one of {', '.join(OPTIMIZERS)}")
        if iterations < 1:
            raise UserError(f"ensemble.weighted.iterations={iterations} must be at least 1")
        self.metric, self.optimizer, self.iterations, self.patience = metric, optimizer, iterations, patience

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None) -> "Weighted":
        if self.optimizer == "caruana":
            self.weights_, self.trajectory_ = caruana(P, y, self.metric, self.iterations, self.patience)
        elif y.ndim == 2:
            raise UserError("ensemble.weighted.optimizer=scipy takes one target: use caruana for several targets")
        else:
            self.weights_, self.trajectory_ = scipy_weights(P, y), []
        return self

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        return np.tensordot(self.weights_.astype(np.float32), P, axes=1)

    def reads(self, n: int) -> np.ndarray:
        return self.weights_ > 0  # a zero-weight member's predictions add exact zeros

    def describe(self, names: list[str]) -> dict:
        return {
            "optimizer": self.optimizer,
            "weights": {n: float(w) for n, w in zip(names, self.weights_, strict=True)},
            "trajectory": [
                {"step": i + 1, "added": names[j], self.metric.name: s} for i, (j, s) in enumerate(self.trajectory_)
            ],
        }
