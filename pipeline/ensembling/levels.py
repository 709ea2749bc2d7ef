"""A second stack level, as AutoGluon's multi-layer stacking, guarded against stacked overfitting.

Level-2 members (boosted trees and a linear model by default: `Stacking` meta-learners) learn from the level-1
members' OOF log-odds plus the tabular features, cross-fitted on the same folds: each is fitted on all folds but
one and predicts that one, so that its predictions of every row are out of fold too; new rows get the mean of its
fold models (a bag, as AutoGluon's). A final Caruana weighting over the level-2 members' OOF predictions and the
level-1 members' combines both levels (AutoGluon's WeightedEnsemble_L3).

Stacked overfitting: the level-1 prediction of a row in fold j comes from the model fitted on every other fold, so
it carries those folds' labels. A level-2 model fitted on fold j's rows and scored on fold k learns from inputs
made with fold k's labels, and its CV flatters it, nested or not. Within one fold, though, every level-1 input
comes from the one model that saw none of that fold's labels: a split inside a fold is a holdout that no level-1
model has seen, the condition AutoGluon's DyStack gets by refitting level 1 without a holdout. The guard fits both
levels on half of each fold and scores them on the other half (and the reverse), against level 1 alone (Caruana
over the level-1 members) fitted on the same half; level 2 is kept only when it wins on average over the folds.
It learns from half a fold instead of all but one fold, so it leans towards level 1: the safe side.
"""

import copy
import logging

import numpy as np
import pandas as pd

from pipeline.ensembling.methods import ONE_TARGET, Method
from pipeline.ensembling.scoring import metric_input
from pipeline.ensembling.stacking import Stacking
from pipeline.ensembling.weighted import Weighted, caruana
from pipeline.metrics import Metric

log = logging.getLogger(__name__)
GUARD_PARTS = 2  # the guard's holdout: half of each fold; level 2 is cross-fitted over halves of the other half


def _rows(X: pd.DataFrame | None, rows: np.ndarray) -> pd.DataFrame | None:
    return None if X is None else X.iloc[rows] if rows.dtype != bool else X[rows]


def cross_fit(members: list[Stacking], P: np.ndarray, y: np.ndarray, X, folds: np.ndarray) -> tuple:
    """Each member fitted on all folds but one predicts that fold: ((members, rows, columns) OOF predictions,
    [[one fitted copy per fold] per member])."""
    Q = np.empty((len(members), *P.shape[1:]), np.float32)
    bags = []
    for i, member in enumerate(members):
        bag = []
        for k in np.unique(folds):
            val = folds == k
            bag.append(copy.deepcopy(member).fit(P[:, ~val], y[~val], _rows(X, ~val)))
            Q[i, val] = bag[-1].predict(P[:, val], _rows(X, val))
        bags.append(bag)
    return Q, bags


def bagged(bags: list[list[Stacking]], P: np.ndarray, X) -> np.ndarray:
    """(members, rows, columns): each level-2 member's prediction of new rows, the mean of its fold models'."""
    return np.stack([np.mean([m.predict(P, X) for m in bag], axis=0, dtype=np.float32) for bag in bags])


class Level2(Method):
    """Level-2 members on level-1 OOF predictions (and features), then Caruana weights over both levels."""

    name = "level2"
    tasks = ONE_TARGET  # several targets: not yet
    learns = True
    needs_folds = True

    def __init__(
        self,
        members: dict[str, Stacking],
        metric: Metric,
        iterations: int = 50,
        patience: int = 10,
        keep_level1: bool = True,
        guard: bool = True,
        seed: int = 0,
        inner_folds: int = 5,
    ):
        self.members, self.metric, self.iterations, self.patience = members, metric, iterations, patience
        self.keep_level1, self.guard, self.seed, self.inner_folds = keep_level1, guard, seed, inner_folds

    @property
    def features(self) -> tuple[list[str], list[str]]:
        """The tabular columns the level-2 members read (what `apply_ensemble` hands them)."""
        return next(iter(self.members.values())).features

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None, folds=None) -> "Level2":
        if folds is None or len(np.unique(folds)) < 2:  # rows of one fold (2-fold CV, nested): split them
            folds = np.random.default_rng(self.seed).permutation(P.shape[1]) % self.inner_folds
        self.guard_ = within_fold_gain(self, P, y, X, folds) if self.guard else None
        self.levels_ = 2 if self.guard_ is None or (self.guard_["gain"] or 0) > 0 else 1
        Q, self.bags_ = cross_fit(list(self.members.values()), P, y, X, folds) if self.levels_ == 2 else (None, [])
        self.weights_, self.trajectory_ = caruana(self._final(P, Q), y, self.metric, self.iterations, self.patience)
        return self

    def _final(self, P: np.ndarray, Q: np.ndarray | None) -> np.ndarray:
        """The final weighting's inputs: level-1 members, then level-2 members (level 1 only when guarded off)."""
        if Q is None:
            return P
        return np.concatenate([P, Q]) if self.keep_level1 else Q

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        Q = bagged(self.bags_, P, X) if self.levels_ == 2 else None
        return np.tensordot(self.weights_.astype(np.float32), self._final(P, Q), axes=1)

    def reads(self, n: int) -> np.ndarray:
        return np.ones(n, bool) if self.levels_ == 2 else self.weights_ > 0  # level 2 reads every member

    def inputs(self, names: list[str]) -> list[str]:
        """The names of the final weighting's inputs."""
        level2 = [f"level2:{n}" for n in self.members] if self.levels_ == 2 else []
        return [*(names if self.keep_level1 or self.levels_ == 1 else []), *level2]

    def describe(self, names: list[str]) -> dict:
        inputs = self.inputs(names)
        return {
            "levels": self.levels_,
            "guard": self.guard_,
            "level2_members": {n: repr(m.meta) for n, m in self.members.items()},
            "weights": {n: float(w) for n, w in zip(inputs, self.weights_, strict=True)},
            "trajectory": [
                {"step": i + 1, "added": inputs[j], self.metric.name: s} for i, (j, s) in enumerate(self.trajectory_)
            ],
        }


def _fold_gain(unguarded: Level2, level1: Weighted, P: np.ndarray, y: np.ndarray, X, rows: np.ndarray, rng) -> float:
    """Within one fold's `rows`: level 2's gain over level 1 alone, each fitted on one half, predicting the other."""
    half = rng.permutation(len(rows)) % GUARD_PARTS
    two, one = np.empty((2, len(rows), P.shape[2]), np.float32)
    for h in range(GUARD_PARTS):
        fit, val = rows[half != h], rows[half == h]
        inner = rng.permutation(len(fit)) % GUARD_PARTS  # level 2's own cross-fitting inside the fitted half
        two[half == h] = unguarded.fit(P[:, fit], y[fit], _rows(X, fit), inner).predict(P[:, val], _rows(X, val))
        one[half == h] = level1.fit(P[:, fit], y[fit]).predict(P[:, val])
    metric = unguarded.metric
    diff = metric(y[rows], metric_input(two)) - metric(y[rows], metric_input(one))
    return diff if metric.greater_is_better else -diff


def within_fold_gain(method: Level2, P: np.ndarray, y: np.ndarray, X, folds: np.ndarray) -> dict:
    """Level 2's gain over level 1 alone where no level-1 model saw a label (within folds): the mean over folds
    (positive: level 2 better; None: level 2 could not be fitted on so few rows), its standard error, per fold."""
    rng = np.random.default_rng(method.seed)
    unguarded = copy.copy(method)  # fitted in place: `method` keeps its own attributes
    unguarded.guard = False
    level1 = Weighted(method.metric, "caruana", method.iterations, method.patience)
    try:
        d = np.array(
            [_fold_gain(unguarded, level1, P, y, X, np.flatnonzero(folds == k), rng) for k in np.unique(folds)]
        )
    except ValueError as e:  # e.g. early stopping's stratified split of a class that has one row in a quarter fold
        reason = str(e).splitlines()[0]
        log.warning("level 2 could not be fitted on half a fold (%s): level 1 alone is kept", reason)
        return {"gain": None, "error": reason}
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
    return {"gain": float(d.mean()), "se": se, "per_fold": d.round(6).tolist()}
