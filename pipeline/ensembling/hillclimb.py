"""Hill climbing with negative weights, the algorithm of the `hillclimbers` package.

Start from the best member; at each step blend in the one member, with the one weight `a` of a grid over
[-0.5, 0.5], that improves the metric most: `blend <- (1 - a) blend + a member`; stop at the first step that does
not improve it. A negative `a` pushes the blend away from a member, which pays when that member shares the
others' errors more than their signal (a weaker near-copy of the best). The weights then sum to 1 but are no
longer a distribution, so class probabilities are clipped to [0, 1] and renormalized, and that output is what
each step is scored on. Candidates are ranked with the vectorized scores Caruana uses (`batch_scorer`).
"""

import numpy as np
import pandas as pd

from pipeline.ensembling.methods import ONE_TARGET, Method, Selected, normalize_rows
from pipeline.ensembling.scoring import metric_input
from pipeline.ensembling.weighted import batch_scorer
from pipeline.errors import UserError
from pipeline.metrics import Metric

MAX_WEIGHT = 0.5  # hillclimbers' range: a step never moves the blend more than half-way to (or from) a member


class HillClimb(Method):
    """Weights summing to 1, negative ones allowed, found by greedy blending steps on the OOF rows."""

    name = "hillclimb"
    tasks = ONE_TARGET  # several targets: not yet
    learns = True

    def __init__(self, metric: Metric, step: float = 0.05, negative: bool = True, max_steps: int = 50):
        if not 0 < step <= MAX_WEIGHT:
            raise UserError(f"ensemble.hillclimb.step={step} must be in (0, {MAX_WEIGHT}], e.g. 0.05")
        self.metric, self.step, self.negative, self.max_steps = metric, step, negative, max_steps

    def grid(self) -> np.ndarray:
        """The weights a step may give a member: +-step, +-2 step, ... +-0.5 (only the positive ones unless
        `negative`)."""
        up = np.round(np.arange(1, int(MAX_WEIGHT / self.step + 1e-9) + 1) * self.step, 10)
        return np.concatenate([-up[::-1], up]) if self.negative else up

    def _output(self, blend: np.ndarray) -> np.ndarray:
        return blend if blend.shape[1] == 1 else normalize_rows(np.clip(blend, 0, 1))

    def _score(self, y: np.ndarray, blend: np.ndarray) -> float:
        return self.metric(y, metric_input(self._output(blend)))

    def _best_step(self, blend: np.ndarray, P: np.ndarray, y: np.ndarray) -> tuple[int, float]:
        """The (member, weight) whose blend ranks best among all candidates."""
        best = None
        for a in self.grid().tolist():
            # (1 - a) blend + a member, in float32 as the members are
            scores = batch_scorer(self.metric, np.float32(a) * P, y)(np.float32(1 - a) * blend, 1)
            j = int(np.nanargmax(scores) if self.metric.greater_is_better else np.nanargmin(scores))
            if best is None or self.metric.better(scores[j], best[0]):
                best = (scores[j], j, a)
        return best[1], best[2]

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None) -> "HillClimb":
        start = Selected(self.metric).fit(P, y).index_
        weights, blend = np.eye(len(P))[start], P[start].copy()
        score = self._score(y, blend)
        self.trajectory_ = [(start, 1.0, score)]
        for _ in range(self.max_steps):
            j, a = self._best_step(blend, P, y)
            candidate = np.float32(1 - a) * blend + np.float32(a) * P[j]
            s = self._score(y, candidate)
            if not self.metric.better(s, score):
                break
            blend, score, weights = candidate, s, (1 - a) * weights + a * np.eye(len(P))[j]
            self.trajectory_.append((j, a, s))
        self.weights_ = weights
        return self

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        return self._output(np.tensordot(self.weights_.astype(np.float32), P, axes=1))

    def reads(self, n: int) -> np.ndarray:
        return self.weights_ != 0

    def describe(self, names: list[str]) -> dict:
        return {
            "weights": {n: float(w) for n, w in zip(names, self.weights_, strict=True)},
            "trajectory": [
                {"step": i, "added": names[j], "weight": a, self.metric.name: s}
                for i, (j, a, s) in enumerate(self.trajectory_)
            ],
        }
