"""A distilled student (`model=distill`): regressors fitted on a teacher's soft targets, read back as the teacher's
kind of prediction. Classification: one regressor on the log-odds of the positive class (binary) or one per class on
the centred log-probabilities (softmax gives them back); regression: one on the teacher's prediction."""

import numpy as np
from scipy.special import expit, softmax

FLOOR = 1e-6  # probabilities clipped to [1e-6, 1 - 1e-6] before the log: a teacher's 0 is a finite target (+-13.8)


def soft_targets(proba: np.ndarray | None, pred: np.ndarray | None = None) -> np.ndarray:
    """(rows, targets): the log-odds of class 1 for two classes, centred log-probabilities for more, or `pred`."""
    if proba is None:
        return pred.reshape(len(pred), 1)
    p = np.clip(proba, FLOOR, 1 - FLOOR)
    if p.shape[1] == 2:
        return np.log(p[:, 1:] / p[:, :1])
    logp = np.log(p)
    return logp - logp.mean(axis=1, keepdims=True)


class Student:
    """The fitted regressors (one per soft target) as a classifier (`predict_proba`, `classes_`) or a regressor."""

    def __init__(self, regressors: list, n_classes: int | None):
        self.regressors_ = regressors
        self.classes_ = np.arange(n_classes) if n_classes else None

    def _raw(self, X) -> np.ndarray:
        return np.column_stack([r.predict(X) for r in self.regressors_])

    def predict_proba(self, X) -> np.ndarray:
        z = self._raw(X)
        if len(self.classes_) == 2:
            p = expit(z[:, 0])
            return np.column_stack([1 - p, p])
        return softmax(z, axis=1)

    def predict(self, X) -> np.ndarray:
        if self.classes_ is None:
            return self._raw(X)[:, 0]
        return self.predict_proba(X).argmax(axis=1)
