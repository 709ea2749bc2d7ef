"""Date and timestamp columns: found (or named with `data.datetime_cols`), checked in the test file, and expanded per
row into numbers a model can split on (year, month, day, day of week, hour, minute, day of year, elapsed days).

A column of ISO timestamps (`2013-12-10T20:00:00Z`) is otherwise a category with a level per row: one-hot encoded
with the rare levels grouped, or dropped as id-like, so an hour or a weekday never reaches a model.
"""

import logging

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format
from sklearn.base import BaseEstimator, TransformerMixin

from pipeline.errors import UserError

log = logging.getLogger(__name__)
ISO = "ISO8601"
MIN_PARSED = 0.95  # a text column is a date column when at least this share of its non-empty values parse
PARTS = ("year", "month", "day", "dayofweek", "hour", "minute", "dayofyear", "elapsed_days")


def parse(values: pd.Series, fmt: str) -> pd.Series:
    """Timestamps in UTC (naive ones read as UTC); NaT where a value is missing or does not parse with `fmt`."""
    return pd.to_datetime(values.astype(object).where(values.notna(), None), format=fmt, utc=True, errors="coerce")


def date_format(values: pd.Series) -> str | None:
    """The format that parses at least MIN_PARSED of a text column's non-empty values (ISO 8601 first, else the
    format pandas guesses from the first value), or None: not a date column."""
    values = values.dropna()
    if values.empty or pd.api.types.is_numeric_dtype(values) or not values.astype(str).str.contains(r"\d").all():
        return None  # numbers stay numbers; a date holds digits in every value ('Jan' alone is a category)
    sample = values.iloc[:2000]
    for fmt in (ISO, guess_datetime_format(str(sample.iloc[0]))):
        if fmt and parse(sample, fmt).notna().mean() >= MIN_PARSED:
            return fmt
    return None


def datetime_columns(given, train: pd.DataFrame, cols: list[str], path) -> dict[str, str]:
    """`{column: format}` of the date columns among the feature columns `cols`: those of `data.datetime_cols`
    (each must parse), or with `auto` every text column that parses as dates; `[]` turns it off."""
    if given is None or given == "auto":
        found = {c: f for c in cols if (f := date_format(train[c])) is not None}
        for c, f in found.items():
            log.info("column '%s' holds dates (format %s): expanded into %s", c, f, ", ".join(PARTS))
        return found
    names = [given] if isinstance(given, str) else list(given)
    out = {}
    for c in names:
        if c not in cols:
            raise UserError(f"data.datetime_cols names '{c}', which is not a feature column of {path}")
        fmt = date_format(train[c])
        if fmt is None:
            raise UserError(
                f"{path}: column '{c}' (data.datetime_cols) does not parse as dates: write them as ISO 8601 "
                "(2013-12-10 or 2013-12-10T20:00:00Z), or leave it out of data.datetime_cols"
            )
        out[c] = fmt
    return out


def check_dates(df: pd.DataFrame, formats: dict[str, str], path) -> None:
    """Every non-empty value of a date column parses as training's did (else one line naming the row)."""
    for c, fmt in formats.items():
        if c not in df.columns:
            continue  # a missing column is reported by the column checks
        bad = df[c].notna() & parse(df[c], fmt).isna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise UserError(
                f"{path} line {line}: column '{c}' holds {df[c][bad].iloc[0]!r}, which does not parse as a date "
                f"like the training file's (format {fmt}): fix the value, or leave the cell empty"
            )


class DateParts(TransformerMixin, BaseEstimator):
    """Each date column as its calendar parts and elapsed days since 1970 (UTC); the parts that vary in the
    fitted rows are kept (a date-only column has no hour). Missing or unparsable values are NaN (imputed after)."""

    def __init__(self, formats: tuple = ()):
        self.formats = formats

    def _parts(self, X) -> list[np.ndarray]:
        X = pd.DataFrame(X)
        out = []
        for c, fmt in zip(X.columns, self.formats, strict=True):
            t = parse(X[c], fmt)
            epoch = (t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1)
            for p in PARTS:
                out.append(np.asarray(epoch if p == "elapsed_days" else getattr(t.dt, p), dtype=np.float64))
        return out

    def fit(self, X, y=None):
        X = pd.DataFrame(X)
        self.columns_ = [str(c) for c in X.columns]
        parts = self._parts(X)
        self.keep_ = np.array([np.nanstd(p) > 0 if np.isfinite(p).any() else False for p in parts])
        return self

    def transform(self, X) -> np.ndarray:
        parts = self._parts(X)
        return np.column_stack([p for p, k in zip(parts, self.keep_, strict=True) if k] or [np.zeros(len(X))])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        names = [f"{c}_{p}" for c in self.columns_ for p in PARTS]
        kept = [n for n, k in zip(names, self.keep_, strict=True) if k]
        return np.array(kept or ["dates_none"], dtype=object)
