"""Tabular features, fitted per fold: every statistic comes from the fold's training rows only."""

import logging
from dataclasses import dataclass, field

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

from pipeline.choices import Encoding, HighCardinality, Scaling
from pipeline.data.contract import is_numeric
from pipeline.data.dates import DateParts
from pipeline.data.encoders import CountEncoder, TextStats, target_encoder
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


@dataclass(frozen=True)
class Extra:
    """Feature columns beyond plain numbers and categories, each with its own transformer (after those two blocks,
    so the native category codes keep their positions): date columns (`{column: format}`), high-cardinality
    categoricals (`high_card_encoding`: count or out-of-fold target encoding for `task`) and text columns whose
    statistics are features (`texts`)."""

    dates: dict = field(default_factory=dict)
    high_card: tuple = ()
    high_card_encoding: str = HighCardinality.NONE
    texts: tuple = ()
    task: str | None = None


def feature_columns(comp, data_cfg, report: bool = True) -> tuple[list[str], list[str], Extra]:
    """The numeric and categorical feature columns of a competition (`split_columns`) and its `Extra` columns as the
    data config asks: its date columns (found when the competition was read), the categoricals with at least
    `data.high_card_min_levels` levels when `data.high_card_encoding` is set, the text columns with
    `data.text_stats`."""
    explicit = data_cfg.get("feature_cols") is not None
    dates = {c: f for c, f in comp.datetime_cols.items() if c in comp.feature_cols}
    numeric, categorical = split_columns(comp.train, [c for c in comp.feature_cols if c not in dates], explicit, report)
    how = data_cfg.get("high_card_encoding") or HighCardinality.NONE
    high = []
    if how != HighCardinality.NONE:
        levels = data_cfg.get("high_card_min_levels", 50)
        high = [c for c in categorical if comp.train[c].nunique() >= levels]
        categorical = [c for c in categorical if c not in high]
    texts = tuple(comp.text_cols) if data_cfg.get("text_stats") else ()
    return numeric, categorical, Extra(dates, tuple(high), how, texts, comp.task)


def make_transformer(
    numeric: list[str],
    categorical: list[str],
    encoding: str = "onehot",
    min_frequency: int = 10,
    scaling: str = "standard",
    extra: Extra = Extra(),
) -> ColumnTransformer:
    """Median-impute + scale numerics; most-frequent-impute + encode categoricals; flag missing values.

    `scaling`: `standard` (z-score), `clipped` (z-score cut to +-CLIP_Z) or `quantile` (ranks mapped to a normal
    distribution: heavy-tailed columns such as amounts stop squashing every other value near 0; helps networks, not
    trees) or `none` (the values as they are). Categories seen fewer than `min_frequency` times in the training rows
    are grouped into one level. `extra`'s columns: their numbers are imputed and scaled as the numerics.
    """
    if encoding not in ENCODINGS:
        raise UserError(f"unknown data.categorical_encoding '{encoding}': choose one of {', '.join(ENCODINGS)}")
    if scaling not in SCALINGS:
        raise UserError(f"unknown data.numeric_scaling '{scaling}': choose one of {', '.join(SCALINGS)}")
    scaler = _scaler(scaling)
    encoder = (
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=min_frequency, sparse_output=False)
        if encoding == "onehot"
        # codes 0..n-1 (the grouped rare level last); a level unseen in the training rows is -1
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=min_frequency)
    )
    blocks = [
        ("num", make_pipeline(SimpleImputer(strategy="median"), *scaler), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), encoder), categorical),
        *_extra_blocks(extra, scaling),
        ("missing", MissingIndicator(features="missing-only", error_on_new=False), numeric + categorical),
    ]
    return ColumnTransformer(blocks, verbose_feature_names_out=True)


def _scaler(scaling: str) -> list:
    return {
        "standard": [StandardScaler()],
        "clipped": [StandardScaler(), FunctionTransformer(_clip_z, feature_names_out="one-to-one")],
        "quantile": [
            QuantileTransformer(n_quantiles=1000, output_distribution="normal", subsample=100_000, random_state=0)
        ],
        "none": [],
    }[scaling]


def _extra_blocks(extra: Extra, scaling: str) -> list[tuple]:
    """The ColumnTransformer blocks of `extra`'s columns (none for an empty `Extra`: the transformer is as before)."""
    blocks = []
    if extra.dates:
        parts = DateParts(tuple(extra.dates.values()))
        blocks.append(
            ("dates", make_pipeline(parts, SimpleImputer(strategy="median"), *_scaler(scaling)), list(extra.dates))
        )
    high = list(extra.high_card)
    if high and extra.high_card_encoding != HighCardinality.NONE:
        blocks.append(("count", make_pipeline(CountEncoder(), *_scaler(scaling)), high))
        if extra.high_card_encoding == HighCardinality.TARGET:
            blocks.append(("target", make_pipeline(target_encoder(extra.task), StandardScaler()), high))
    if extra.texts:
        blocks.append(("text", make_pipeline(TextStats(), *_scaler(scaling)), list(extra.texts)))
    return blocks


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
        self,
        numeric: list[str],
        categorical: list[str],
        encoding="onehot",
        min_frequency=10,
        scaling="standard",
        extra: Extra = Extra(),
    ):
        self.numeric, self.categorical, self.encoding = numeric, categorical, encoding
        self.transformer = make_transformer(numeric, categorical, encoding, min_frequency, scaling, extra)
        # target encoding: the training rows' own codes come out of fit_transform's inner folds, not transform
        self.cross_fitted = bool(extra.high_card) and extra.high_card_encoding == HighCardinality.TARGET

    def fit(self, df: pd.DataFrame, y: np.ndarray | None = None) -> "TabularFeatures":
        self.transformer.fit(_as_object(df, self._objects), y)
        return self

    def fit_transform(self, df: pd.DataFrame, y: np.ndarray | None = None) -> np.ndarray:
        """The fitted rows' features as a model trains on them: out of fold for the target encoding."""
        return self.transformer.fit_transform(_as_object(df, self._objects), y).astype(np.float32)

    @property
    def _objects(self) -> list[str]:
        """The columns read as categories (a target or count encoding's, too)."""
        cols = {c for name, _, cs in self.transformer.transformers if name in ("cat", "count", "target") for c in cs}
        return [c for c in self.categorical if c in cols] + sorted(cols - set(self.categorical))

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.transformer.transform(_as_object(df, self._objects)).astype(np.float32)

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
