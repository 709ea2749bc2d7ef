"""Several targets (multilabel, multiregression) for the methods that combine one target at a time (rank,
geometric, stacking): one copy of the method per target, each fitted on that target's column of every member."""

import copy

import numpy as np
import pandas as pd

from pipeline.ensembling.methods import Method


class PerTarget(Method):
    """`proto` fitted per target column. A label's P(label) is handed over in the binary convention (two columns,
    P(0) and P(1)) and its P(1) taken back; a value as the one regression column."""

    learns = True

    def __init__(self, proto: Method, labels: bool):
        self.proto, self.labels = proto, labels
        self.name, self.learns = proto.name, proto.learns
        self.features = getattr(proto, "features", ([], []))  # stacking's passthrough columns, for predict

    def _column(self, P: np.ndarray, k: int) -> np.ndarray:
        p = P[:, :, k]
        return np.stack([1 - p, p], axis=2) if self.labels else p[:, :, None]

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None) -> "PerTarget":
        self.methods_ = [copy.deepcopy(self.proto).fit(self._column(P, k), y[:, k], X) for k in range(P.shape[2])]
        return self

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        methods = getattr(self, "methods_", None) or [self.proto] * P.shape[2]  # unfitted: rows among themselves
        cols = [m.predict(self._column(P, k), X)[:, -1] for k, m in enumerate(methods)]  # P(1), or the value
        return np.stack(cols, axis=1).astype(np.float32)

    def reads(self, n: int) -> np.ndarray:
        return np.any([m.reads(n) for m in getattr(self, "methods_", [self.proto])], axis=0)

    def describe(self, names: list[str]) -> dict:
        per = [m.describe(names) for m in self.methods_]
        weights = {n: float(np.mean([d.get("weights", {}).get(n, 0.0) for d in per])) for n in names}
        return {"weights": weights, "per_target": per}
