"""Ways to combine members' predictions, and the parameter-free ones: mean, rank, geometric, vote.

Every method maps `P` (members, rows, columns) to one (rows, columns) prediction in the metric convention:
probabilities per class (rows sum to 1) for classification, one `prediction` column for regression.
"""

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from pipeline.metrics import CLASSIFICATION

ONE_TARGET = (*CLASSIFICATION, "regression")
ALL_TASKS = (*ONE_TARGET, "multilabel", "multiregression")
LABELS = (*CLASSIFICATION, "multilabel")  # probabilities (several labels: per label, see per_target.py)
EPS = 1e-15  # the metrics' own probability floor (pipeline.metrics._normalized)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along each row of a 2-D array, tied values sharing their average rank.

    The same as scipy.stats.rankdata(x, axis=1), in a third of its time on 100,000 x 10 float32 columns.
    """
    k, n = x.shape
    order = np.argsort(x, axis=1)
    s = np.take_along_axis(x, order, axis=1)
    first = np.ones((k, n), bool)  # where a run of equal values starts, in sorted order
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones((k, n), bool)
    last[:, :-1] = first[:, 1:]
    pos = np.arange(n)
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, pos, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((k, n))
    np.put_along_axis(ranks, order, (start + end) / 2 + 1, axis=1)
    return ranks


def normalize_rows(p: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum to 1 (valid class probabilities)."""
    return (p / np.maximum(p.sum(axis=1, keepdims=True), EPS)).astype(np.float32)


class Method(ABC):
    """A combination of members. `learns`: fitted on the target, so it must be scored out of fold."""

    name = ""
    tasks: tuple[str, ...] = ALL_TASKS
    learns = False
    needs_folds = False  # True: `fit` also takes `folds=` (each row's fold), to cross-fit on the same folds

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None) -> "Method":
        """Learn from the members' predictions `P` of rows with target `y` (nothing, for most methods)."""
        return self

    @abstractmethod
    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        """The combined (rows, columns) prediction."""

    def describe(self, names: list[str]) -> dict:
        """What the fitted method learned, for weights.json: equal weights unless overridden."""
        return {"weights": dict.fromkeys(names, 1 / len(names))}

    def reads(self, n: int) -> np.ndarray:
        """Which of the `n` members' predictions `predict` depends on (all, unless a member has no say in it)."""
        return np.ones(n, bool)


class Mean(Method):
    """Average of probabilities / predictions: the robust default when members are comparably good."""

    name = "mean"

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        return P.mean(axis=0, dtype=np.float32)


class Rank(Method):
    """Average of each member's ranks per class column, scaled to [0, 1]: for AUC-like metrics, where only the
    order matters and members' probabilities are calibrated differently.

    Unfitted, rows are ranked among themselves (how the out-of-fold rows are scored). Fitted on the OOF rows, it
    keeps each member's distribution there (per class column, 1,001 quantiles: ~2 MB for 50 members x 10 classes)
    and ranks new rows against it, so that a row's prediction does not depend on which other rows come with it:
    `make predict` on any part of the test file gives the same rows as on all of it."""

    name = "rank"
    tasks = LABELS
    LEVELS = np.linspace(0.0, 1.0, 1001)

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs  # threads ranking members (numpy's sorts release the GIL)

    @staticmethod
    def _columns(P: np.ndarray) -> np.ndarray:
        return P[:, :, 1:] if P.shape[2] == 2 else P  # binary: P(class 0) is 1 - P(class 1), the same order

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None) -> "Rank":
        cols = self._columns(P)
        self.reference_ = np.quantile(cols, self.LEVELS, axis=1).transpose(1, 0, 2).astype(np.float32)
        return self

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        cols = self._columns(P)
        reference = getattr(self, "reference_", None)
        total = np.zeros(cols.shape[1:], np.float64)
        if reference is not None:  # quantiles among the member's OOF predictions, in [0, 1]
            for member, ref in zip(cols, reference, strict=True):
                for c in range(cols.shape[2]):
                    total[:, c] += np.interp(member[:, c], ref[:, c], self.LEVELS)
            scaled = total / len(P)
        else:
            # ranks summed as they come, a few members at a time: float64 ranks of all 50 at once would take
            # 400 MB; ties share a rank, so equal inputs stay equal
            ranks = Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")(
                delayed(average_ranks)(np.ascontiguousarray(member.T)) for member in cols
            )
            for r in ranks:
                total += r.T
            scaled = (total / len(P) - 1) / max(P.shape[1] - 1, 1)
        if P.shape[2] == 2:
            return np.hstack([1 - scaled, scaled]).astype(np.float32)
        return normalize_rows(scaled)


class Geometric(Method):
    """Mean of log-probabilities (renormalized): punishes a class any member rules out; good for logloss."""

    name = "geometric"
    tasks = LABELS

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        logs = np.zeros(P.shape[1:], np.float64)
        for member in P:
            logs += np.log(np.maximum(member, EPS))
        return normalize_rows(np.exp(logs / len(P)))


class Vote(Method):
    """Majority of the members' predicted labels, as vote shares: for label metrics (accuracy, F1, kappa)
    when members' probabilities are badly calibrated."""

    name = "vote"
    tasks = CLASSIFICATION

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        n, c = P.shape[1:]
        votes = np.zeros((n, c), np.float64)
        for member in P:
            votes[np.arange(n), member.argmax(axis=1)] += 1
        # ties go to the class with the higher mean probability: the bonus stays under half a vote
        votes += 0.5 * P.mean(axis=0, dtype=np.float64)
        return normalize_rows(votes)


class Selected(Method):
    """The single member that scores best on the rows it is fitted on. As a method, nested CV scores the choice
    itself: the best of many members' CV scores flatters its member (the winner's curse), its nested score not."""

    name = "best_member"
    learns = True

    def __init__(self, metric):
        self.metric = metric

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None) -> "Selected":
        best = None
        for i, member in enumerate(P):
            s = self.metric(y, member[:, 0] if member.shape[1] == 1 else member)
            if best is None or self.metric.better(s, best[1]):
                best = (i, s)
        self.index_ = best[0]
        return self

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        return P[self.index_]

    def reads(self, n: int) -> np.ndarray:
        return np.arange(n) == self.index_

    def describe(self, names: list[str]) -> dict:
        return {"member": names[self.index_], "weights": {n: float(i == self.index_) for i, n in enumerate(names)}}
