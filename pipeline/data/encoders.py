"""Tabular features beyond scaling and one-hot codes: count encoding of high-cardinality categories, out-of-fold
target encoding (scikit-learn's `TargetEncoder`, cross-fitted), and cheap statistics of text columns.

A categorical column with hundreds of levels loses most of them to rare-level grouping under one-hot encoding
(`data.rare_min_frequency`); its levels' frequency and their out-of-fold target means keep that signal in one or a
few numeric columns per column.
"""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import TargetEncoder

from pipeline.choices import Task

TE_FOLDS = 5  # inner folds of the target encoding: no training row's code sees its own target


def target_encoder(task: str, seed: int = 0) -> "TargetEncoder | PerTargetEncoder":
    """Out-of-fold target means per level, shrunk towards the global mean (`smooth="auto"`, empirical Bayes).
    `fit_transform` on a fold's training rows cross-fits them over TE_FOLDS inner folds; `transform` (validation,
    test rows) uses the encoding fitted on all the fold's training rows. Several targets: one encoder each."""
    if task in (Task.MULTILABEL, Task.MULTIREGRESSION):
        return PerTargetEncoder(Task.BINARY if task == Task.MULTILABEL else Task.REGRESSION, seed)
    kind = {Task.REGRESSION: "continuous", Task.BINARY: "binary"}.get(task, "multiclass")
    split = KFold if kind == "continuous" else StratifiedKFold
    return TargetEncoder(target_type=kind, cv=split(TE_FOLDS, shuffle=True, random_state=seed))


class PerTargetEncoder(TransformerMixin, BaseEstimator):
    """Several targets: `target_encoder(task)` per target column, side by side (cross-fitted as each one is)."""

    def __init__(self, task: str = Task.BINARY, seed: int = 0):
        self.task, self.seed = task, seed

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        y = np.asarray(y)
        self.encoders_ = [target_encoder(self.task, self.seed) for _ in range(y.shape[1])]
        return np.hstack([e.fit_transform(X, y[:, k]) for k, e in enumerate(self.encoders_)])

    def fit(self, X, y=None):
        self.fit_transform(X, y)
        return self

    def transform(self, X) -> np.ndarray:
        return np.hstack([e.transform(X) for e in self.encoders_])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"t{k}_{n}" for k, e in enumerate(self.encoders_) for n in e.get_feature_names_out()])


class CountEncoder(TransformerMixin, BaseEstimator):
    """log(1 + how often each level occurs in the fitted rows) per column; 0 for a level never seen there."""

    def fit(self, X, y=None):
        X = pd.DataFrame(X).astype(str)
        self.columns_ = [str(c) for c in X.columns]
        # two arrays per column (levels, counts): skops loads arrays at once, a dict entry by entry
        self.levels_, self.counts_ = [], []
        for c in X.columns:
            counts = X[c].value_counts()
            self.levels_.append(counts.index.to_numpy(dtype=str))
            self.counts_.append(counts.to_numpy(dtype=np.float64))
        return self

    def transform(self, X) -> np.ndarray:
        X = pd.DataFrame(X).astype(str)
        out = []
        for c, levels, counts in zip(X.columns, self.levels_, self.counts_, strict=True):
            pos = pd.Index(levels).get_indexer(X[c])
            out.append(np.log1p(np.where(pos >= 0, counts[pos], 0.0)))
        return np.column_stack(out)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"{c}_count" for c in self.columns_], dtype=object)


TEXT_STATS = ("log_chars", "log_words", "digits", "capitals", "punctuation", "exclamations")


class TextStats(TransformerMixin, BaseEstimator):
    """Per text column: log(1 + characters), log(1 + words), the shares of digits, capitals and punctuation among
    the characters, and the count of '!': how a text is written, which n-grams and embeddings do not see."""

    def fit(self, X, y=None):
        self.columns_ = [str(c) for c in pd.DataFrame(X).columns]
        return self

    def transform(self, X) -> np.ndarray:
        X, out = pd.DataFrame(X), []
        for c in X.columns:
            s = X[c].fillna("").astype(str)
            n = s.str.len().to_numpy(np.float64)
            per_char = np.maximum(n, 1)
            out += [
                np.log1p(n),
                np.log1p(s.str.split().str.len().fillna(0).to_numpy(np.float64)),
                s.str.count(r"\d").to_numpy(np.float64) / per_char,
                s.str.count(r"[A-Z]").to_numpy(np.float64) / per_char,
                s.str.count(r"[^\w\s]").to_numpy(np.float64) / per_char,
                s.str.count("!").to_numpy(np.float64),
            ]
        return np.column_stack(out)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"{c}_{s}" for c in self.columns_ for s in TEXT_STATS], dtype=object)
