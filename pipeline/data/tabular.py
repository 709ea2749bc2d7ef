"""Tabular features, fitted per fold: every statistic comes from the fold's training rows only."""

import logging

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    QuantileTransformer,
    StandardScaler,
)

from pipeline.choices import Encoding, Scaling
from pipeline.data.contract import is_numeric
from pipeline.errors import UserError

log = logging.getLogger(__name__)
# native: ordinal codes that tree heads are told are categorical (CatBoost, LightGBM, XGBoost, HistGradientBoosting
# split on category sets); ordinal: the same codes, read as numbers
ENCODINGS = tuple(Encoding)
SCALINGS = tuple(Scaling)
# clipped: z-scores cut to +-CLIP_Z, so that a row far outside the training range (Ames: living areas 8 standard
# deviations out) cannot drive an MLP's extrapolation. Ames, MLP without batch norm, 2 seeds x 5 folds: CV RMSE
# 28.0k clipped at 3, 29.8k at 5, 31.8k unclipped (LightGBM: 25.5k).
CLIP_Z = 3.0


def split_columns(
    df: pd.DataFrame, cols: list[str], explicit: bool = False, report: bool = True
) -> tuple[list[str], list[str]]:
    """Split feature columns into numeric and categorical; drop (and report) constant and id-like columns.

    An id-like column is a string column with a different value in every row, or an integer column that is
    a permutation of consecutive numbers: it identifies rows rather than describing them. Columns the user
    listed explicitly (`explicit`) are only reported, not dropped; `report=False` leaves the reporting to an
    earlier call.
    """
    numeric, categorical = [], []
    for c in cols:
        s = df[c]
        is_num = is_numeric(s)
        n = s.nunique(dropna=True)
        consecutive = pd.api.types.is_integer_dtype(s) and n == len(s) and s.max() - s.min() == n - 1
        reason = (
            "constant"
            if n <= 1
            else "id-like (unique per row)"
            if (n == len(s) and not is_num) or consecutive
            else None
        )
        if reason and report:
            what = (
                "kept (listed in data.feature_cols)"
                if explicit
                else "dropped (list it in data.feature_cols to keep it)"
            )
            log.warning("feature '%s' is %s: %s", c, reason, what)
        if reason and not explicit:
            continue
        (numeric if is_num else categorical).append(c)
    return numeric, categorical


def make_transformer(
    numeric: list[str],
    categorical: list[str],
    encoding: str = "onehot",
    min_frequency: int = 10,
    scaling: str = "standard",
) -> ColumnTransformer:
    """Median-impute + scale numerics; most-frequent-impute + encode categoricals; flag missing values.

    `scaling`: `standard` (z-score), `clipped` (z-score cut to +-CLIP_Z) or `quantile` (ranks mapped to a normal
    distribution: heavy-tailed columns such as amounts stop squashing every other value near 0; helps networks, not
    trees) or `none` (the values as they are). Categories seen fewer than `min_frequency` times in the training rows
    are grouped into one level.
    """
    if encoding not in ENCODINGS:
        raise UserError(f"unknown data.categorical_encoding '{encoding}': choose one of {', '.join(ENCODINGS)}")
    if scaling not in SCALINGS:
        raise UserError(f"unknown data.numeric_scaling '{scaling}': choose one of {', '.join(SCALINGS)}")
    scaler = {
        "standard": [StandardScaler()],
        "clipped": [StandardScaler(), FunctionTransformer(_clip_z, feature_names_out="one-to-one")],
        "quantile": [
            QuantileTransformer(n_quantiles=1000, output_distribution="normal", subsample=100_000, random_state=0)
        ],
        "none": [],
    }[scaling]
    encoder = (
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=min_frequency, sparse_output=False)
        if encoding == "onehot"
        # codes 0..n-1 (the grouped rare level last); a level unseen in the training rows is -1
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=min_frequency)
    )
    return ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), *scaler), numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), encoder), categorical),
            ("missing", MissingIndicator(features="missing-only", error_on_new=False), numeric + categorical),
        ],
        verbose_feature_names_out=True,
    )


def _clip_z(z: np.ndarray) -> np.ndarray:
    return np.clip(z, -CLIP_Z, CLIP_Z)


def _as_object(df: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    # sklearn's imputers want categoricals as object columns with np.nan for missing
    df = df.copy()
    for c in categorical:
        df[c] = df[c].astype(object).where(df[c].notna(), np.nan)
    return df


class TabularFeatures:
    """Fit on a fold's training rows, then transform any rows (validation, test) with those statistics."""

    def __init__(
        self, numeric: list[str], categorical: list[str], encoding="onehot", min_frequency=10, scaling="standard"
    ):
        self.numeric, self.categorical, self.encoding = numeric, categorical, encoding
        self.transformer = make_transformer(numeric, categorical, encoding, min_frequency, scaling)

    def fit(self, df: pd.DataFrame) -> "TabularFeatures":
        self.transformer.fit(_as_object(df, self.categorical))
        return self

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.transformer.transform(_as_object(df, self.categorical)).astype(np.float32)

    @property
    def names(self) -> list[str]:
        return list(self.transformer.get_feature_names_out())

    @property
    def categorical_positions(self) -> list[int]:
        return categorical_positions(self.numeric, self.categorical, self.encoding)


def categorical_positions(numeric: list[str], categorical: list[str], encoding: str) -> list[int]:
    """Output columns of `make_transformer` that hold integer category codes (native encoding only).

    The transformer writes the numerics first, then one code column per categorical, then missing flags, so the
    positions follow from the column lists alone, without the fitted transformer.
    """
    if encoding != "native":
        return []
    return list(range(len(numeric), len(numeric) + len(categorical)))


def skewed_positive(y: np.ndarray) -> bool:
    """A non-negative target with a long right tail (sample skewness > 1), e.g. prices, amounts, counts:
    `model.target_transform=log1p` may fit it better (the automatic zoo trains both and keeps what CV says)."""
    y = np.asarray(y, dtype=float)
    if len(y) < 3 or y.min() < 0 or y.std() == 0:
        return False
    return float(((y - y.mean()) ** 3).mean() / y.std() ** 3) > 1.0
