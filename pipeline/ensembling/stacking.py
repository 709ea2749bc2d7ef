"""Stacking: a meta-learner trained on the members' out-of-fold predictions (never on in-fold ones).

The inputs are each member's logits (log-odds of its probabilities, or its raw predictions for regression),
optionally with the competition's tabular features (`passthrough`), preprocessed inside the meta-learner's
pipeline so that every fit learns its statistics from its own training rows only.
"""

import numpy as np
import pandas as pd
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.choices import REGRESSIONS
from pipeline.data.tabular import make_transformer
from pipeline.ensembling.methods import ALL_TASKS, Method
from pipeline.errors import UserError

LOGIT_CLIP = 1e-6  # log-odds of 1e-6 = -13.8: keeps a member's 0/1 outputs from dominating the meta-learner


def meta_learner(cfg: DictConfig, task: str) -> BaseEstimator:
    """Build `ensemble.stacking.classifier` (or `.regressor`) from its `_target_`; check it fits the task."""
    key = "regressor" if task in REGRESSIONS else "classifier"
    return estimator(cfg[key], f"ensemble.stacking.{key}", task)


def estimator(spec: DictConfig, key: str, task: str) -> BaseEstimator:
    """The sklearn estimator the config `key` holds (`spec`, with its `_target_`), checked to fit the task."""
    try:
        est = instantiate(spec)
    except InstantiationException as e:
        raise UserError(f"{key} could not be built: {str(e).splitlines()[0]}") from e
    regression = task in REGRESSIONS
    fits = is_regressor(est) if regression else is_classifier(est) and hasattr(est, "predict_proba")
    if not fits:
        want = "a regressor" if regression else "a classifier with predict_proba"
        raise UserError(f"{key} must be {want} (an sklearn estimator); got {type(est).__name__}")
    return est


def member_features(P: np.ndarray, logit: bool) -> np.ndarray:
    """(rows, members x columns) inputs: binary keeps P(class 1) only, as P(class 0) is its complement."""
    F = P[:, :, 1:] if P.shape[2] == 2 else P
    if logit and P.shape[2] > 1:
        F = np.clip(F, LOGIT_CLIP, 1 - LOGIT_CLIP)
        F /= 1 - F  # in place, one log: 50 x 100k x 10 float32 values are 200 MB a temporary
        np.log(F, out=F)
    return F.transpose(1, 0, 2).reshape(P.shape[1], -1)


class Stacking(Method):
    """A meta-learner on the members' OOF predictions: learns which members to trust, for which classes,
    and (with passthrough) where in feature space. Needs enough rows: thousands, not dozens."""

    name = "stacking"
    tasks = ALL_TASKS
    learns = True

    def __init__(self, meta: BaseEstimator, logit: bool = True, numeric: tuple = (), categorical: tuple = ()):
        self.meta, self.logit = meta, logit
        self.features = list(numeric), list(categorical)  # passthrough tabular columns; empty: members only

    def _inputs(self, P: np.ndarray, X: pd.DataFrame | None) -> np.ndarray | pd.DataFrame:
        F = member_features(P, self.logit)
        if not any(self.features):
            return F
        return pd.concat(
            [pd.DataFrame(F, columns=[f"m{i}" for i in range(F.shape[1])]), X.reset_index(drop=True)], axis=1
        )

    def _model(self, n_member_inputs: int) -> BaseEstimator:
        # z-scored inputs: the penalty treats every input alike, and lbfgs converges in ~50 iterations
        # instead of ~400 on raw log-odds in [-14, 14] (measured on the MNIST demo)
        if not any(self.features):
            return make_pipeline(StandardScaler(), clone(self.meta))
        numeric, categorical = self.features
        columns = ColumnTransformer(
            [
                ("members", StandardScaler(), [f"m{i}" for i in range(n_member_inputs)]),
                ("features", make_transformer(numeric, categorical), numeric + categorical),
            ]
        )
        return make_pipeline(columns, clone(self.meta))

    def fit(self, P: np.ndarray, y: np.ndarray, X: pd.DataFrame | None = None) -> "Stacking":
        self.n_columns_ = P.shape[2]
        n_member_inputs = len(P) * (1 if self.n_columns_ == 2 else self.n_columns_)
        self.model_ = self._model(n_member_inputs).fit(self._inputs(P, X), y)
        return self

    def predict(self, P: np.ndarray, X: pd.DataFrame | None = None) -> np.ndarray:
        inputs = self._inputs(P, X)
        if self.n_columns_ == 1:
            return self.model_.predict(inputs).astype(np.float32)[:, None]
        proba = self.model_.predict_proba(inputs)
        out = np.zeros((P.shape[1], self.n_columns_), np.float32)
        out[:, self.model_.classes_] = proba  # a class absent from the training folds gets probability 0
        return out

    def describe(self, names: list[str]) -> dict:
        meta = self.model_[-1]
        info = {"meta_learner": repr(meta), "passthrough": sum(self.features, [])}
        if hasattr(meta, "coef_"):  # linear meta-learners: one row per class (one for binary/regression)
            multi = self.n_columns_ > 2  # binary and regression: one input per member
            inputs = [f"{n}[{c}]" for n in names for c in range(self.n_columns_)] if multi else list(names)
            if any(self.features):
                inputs += list(self.model_[0].named_transformers_["features"].get_feature_names_out())
            info["coef"] = {
                "inputs": inputs,
                "values": np.atleast_2d(meta.coef_).astype(float).round(6).tolist(),
            }
        return info
