"""No leakage: every statistic of the tabular features comes from the fold's training rows only.

The validation and test rows are built so that each statistic changes when they take part in the fit:
numeric values of 1e6 (scaler mean/scale, imputer median), a level seen only in validation rows (a new
category if leaked), a level rare in training but frequent with the test rows (no longer grouped if leaked),
missing values only outside training (missing indicators), and a mode that flips if the test rows count.
`test_leak_is_detectable` proves that each of these checks fails on a fit that saw the other rows.
"""

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from conftest import Comp

from pipeline.data.tabular import TabularFeatures, split_columns
from pipeline.errors import UserError
from pipeline.prepare import prepare

NUMERIC, CATEGORICAL = ["a", "b", "c"], ["cat", "cat2"]
N_TRAIN = 60


def make_rows() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows, test rows)."""
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "a": rng.normal(5.0, 2.0, N_TRAIN),
            "b": np.where(np.arange(N_TRAIN) % 7 == 0, np.nan, rng.normal(0.0, 1.0, N_TRAIN)),  # 9 missing
            "c": rng.normal(1.0, 0.5, N_TRAIN),  # never missing in training
            "cat": ["x"] * 30 + ["y"] * 22 + ["z"] * 8,  # z: 8 < min_frequency 10 -> grouped as rare
            "cat2": ["p"] * 31 + ["q"] * 29,  # mode p; q if the test rows counted
        }
    )
    outside = {"a": 1e6, "b": 1e6, "c": np.nan}
    val = pd.DataFrame({**outside, "cat": "new", "cat2": np.nan}, index=range(5)).astype({"cat2": object})
    test = pd.DataFrame({**outside, "cat": "z", "cat2": "q"}, index=range(5))  # z: 13 rows if leaked
    return train, val, test


@pytest.fixture(scope="module")
def rows() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return make_rows()


def fitted_stats(features: TabularFeatures) -> dict[str, object]:
    """The statistics a fitted `TabularFeatures` holds, by name."""
    steps = features.transformer.named_transformers_
    num_imputer, scaler = steps["num"][0], steps["num"][-1]
    cat_imputer, encoder = steps["cat"][0], steps["cat"][-1]
    return {
        "median": num_imputer.statistics_.tolist(),
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "mode": cat_imputer.statistics_.tolist(),
        "categories": [c.tolist() for c in encoder.categories_],
        "infrequent": [None if c is None else c.tolist() for c in encoder.infrequent_categories_],
        "missing": [n for n in features.names if n.startswith("missing__")],
    }


def expected_stats(train: pd.DataFrame) -> dict[str, object]:
    """The same statistics computed with numpy/pandas from the training rows alone."""
    median = train[NUMERIC].median()
    imputed = train[NUMERIC].fillna(median)
    counts = {c: train[c].value_counts() for c in CATEGORICAL}
    return {
        "median": median.tolist(),
        "mean": imputed.mean().tolist(),
        "scale": imputed.std(ddof=0).tolist(),
        "mode": [counts[c].idxmax() for c in CATEGORICAL],
        "categories": [sorted(counts[c].index) for c in CATEGORICAL],
        "infrequent": [sorted(counts[c].index[counts[c] < 10]) or None for c in CATEGORICAL],
        "missing": [f"missing__missingindicator_{c}" for c in NUMERIC + CATEGORICAL if train[c].isna().any()],
    }


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        if key in ("median", "mean", "scale"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)
        else:
            assert got[key] == want[key], key


def test_statistics_come_from_training_rows_only(rows: tuple[pd.DataFrame, ...]) -> None:
    train, val, test = rows
    features = TabularFeatures(NUMERIC, CATEGORICAL).fit(train)
    want = expected_stats(train)
    _assert_same(fitted_stats(features), want)
    assert want["missing"] == ["missing__missingindicator_b"]  # not c / cat2, missing only outside training
    assert not any("new" in name for name in features.names)

    names = features.names
    for outside in (val, test):
        x = features.transform(outside)
        mean, scale, median = (np.array(want[k]) for k in ("mean", "scale", "median"))
        expected_num = (np.array([1e6, 1e6, median[2]]) - mean) / scale  # c is imputed with the training median
        np.testing.assert_allclose(x[:, :3], np.tile(expected_num, (5, 1)), rtol=1e-5)
        # "new" (never seen in training) and "z" (rare in training) both fall into the grouped rare level
        assert (x[:, names.index("cat__cat_infrequent_sklearn")] == 1).all()
        assert (x[:, [names.index("cat__cat_x"), names.index("cat__cat_y")]] == 0).all()
    # cat2 missing in the validation rows -> the training mode "p"
    assert (features.transform(val)[:, names.index("cat__cat2_p")] == 1).all()


def test_leak_is_detectable(rows: tuple[pd.DataFrame, ...]) -> None:
    """Fitting on training + validation + test rows changes every statistic checked above."""
    train, val, test = rows
    leaky = fitted_stats(TabularFeatures(NUMERIC, CATEGORICAL).fit(pd.concat([train, val, test])))
    want = expected_stats(train)
    for key in want:
        with pytest.raises(AssertionError):
            _assert_same({**want, key: leaky[key]}, want)


def test_unknown_level_is_all_zeros_without_rare_levels(rows: tuple[pd.DataFrame, ...]) -> None:
    train, val, _ = rows
    features = TabularFeatures(NUMERIC, CATEGORICAL, min_frequency=1).fit(train)
    names = features.names
    assert [n for n in names if n.startswith("cat__cat_")] == ["cat__cat_x", "cat__cat_y", "cat__cat_z"]
    x = features.transform(val)
    assert (x[:, [names.index(n) for n in ("cat__cat_x", "cat__cat_y", "cat__cat_z")]] == 0).all()


def test_ordinal_encoding_from_training_rows(rows: tuple[pd.DataFrame, ...]) -> None:
    train, val, test = rows
    features = TabularFeatures(NUMERIC, CATEGORICAL, encoding="ordinal").fit(train)
    encoder = features.transformer.named_transformers_["cat"][-1]
    assert [c.tolist() for c in encoder.categories_] == [["x", "y", "z"], ["p", "q"]]
    codes = features.transform(pd.concat([train.iloc[[0, 30, 59]], val.iloc[[0]], test.iloc[[0]]]))[
        :, features.names.index("cat__cat")
    ]
    assert codes.tolist() == [0, 1, 2, -1, 2]  # x, y, z (rare: grouped), "new" (unknown), z


def test_quantile_scaling_from_training_rows(rows: tuple[pd.DataFrame, ...]) -> None:
    """Quantile scaling maps the training rows' own ranks to a normal distribution: values outside the training
    range land on its extreme quantile, whatever the other rows hold."""
    train, val, test = rows
    features = TabularFeatures(NUMERIC, CATEGORICAL, scaling="quantile").fit(train)
    quantiles = features.transformer.named_transformers_["num"][-1].quantiles_
    imputed = train[NUMERIC].fillna(train[NUMERIC].median())
    np.testing.assert_allclose(quantiles[[0, -1]], [imputed.min(), imputed.max()])
    x = features.transform(val)[:, :2]  # 1e6, far above every training value
    np.testing.assert_allclose(x, features.transform(train.iloc[[imputed["a"].argmax()]])[:, :2].max(), rtol=1e-5)
    with pytest.raises(UserError, match="unknown data.numeric_scaling 'log': choose one of standard, quantile"):
        TabularFeatures(NUMERIC, CATEGORICAL, scaling="log")


def test_unknown_encoding_rejected() -> None:
    with pytest.raises(UserError, match="unknown data.categorical_encoding 'target': choose one of onehot, ordinal"):
        TabularFeatures(NUMERIC, CATEGORICAL, encoding="target")


def test_folds_fit_on_their_training_rows(make_comp: Callable[..., Comp], make_cfg: Callable) -> None:
    """Per fold of the real data stage: fit on folds != k; training rows come out z-scored, test rows with
    the same statistics; a fit that also saw fold k gives training rows that are not z-scored."""
    comp = make_comp(n_train=50, n_test=10)
    rng = np.random.default_rng(1)
    for df in (comp.train, comp.test):
        df["income"] = rng.lognormal(3.0, 1.5, len(df)).round(2)  # heavy tail: one row moves the mean
        df.loc[df.index[::6], "num"] = np.nan
    comp.write()
    prep = prepare(make_cfg(comp))
    train, test = prep.comp.train, prep.comp.test
    numeric, categorical = split_columns(train, prep.comp.feature_cols)
    assert (numeric, categorical) == (["num", "income"], ["cat"])
    columns = [f"num__{c}" for c in numeric]
    for k in range(5):
        fit_rows = train[prep.folds != k]
        features = TabularFeatures(numeric, categorical).fit(fit_rows)
        z = pd.DataFrame(features.transform(fit_rows), columns=features.names)[columns]
        np.testing.assert_allclose(z.mean(), 0.0, atol=1e-5)
        np.testing.assert_allclose(z.std(ddof=0), 1.0, rtol=1e-5)

        imputed = fit_rows[numeric].fillna(fit_rows[numeric].median())
        expected = (test[numeric].fillna(fit_rows[numeric].median()) - imputed.mean()) / imputed.std(ddof=0)
        got = pd.DataFrame(features.transform(test), columns=features.names)[columns]
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-4, atol=1e-5)

        leaky = TabularFeatures(numeric, categorical).fit(train)
        z_leaky = pd.DataFrame(leaky.transform(fit_rows), columns=leaky.names)[columns]
        assert (z_leaky.mean().abs() > 1e-3).all()


def test_split_columns_reports_constant_and_id_like(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame(
        {
            "row": np.arange(10, 20),  # consecutive integers: id-like
            "name": [f"n{i}" for i in range(10)],  # a different string per row: id-like
            "one": [1] * 10,  # constant
            "size": np.linspace(0.0, 1.0, 10),  # unique floats are values, not ids
            "color": ["r", "g"] * 5,
        }
    )
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert split_columns(df, list(df.columns)) == (["size"], ["color"])
    for message in (
        "'row' is id-like (unique per row): dropped",
        "'name' is id-like",
        "'one' is constant: dropped",
    ):
        assert message in caplog.text
    assert split_columns(df, ["one", "name"], explicit=True) == (["one"], ["name"])
    assert "kept (listed in data.feature_cols)" in caplog.text
