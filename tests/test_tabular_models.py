"""Tabular heads with real estimators on tiny competitions: early stopping on each fold's validation rows, native
categoricals, the log1p target transform, model ids naming what was trained, and a stable MLP regression."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_cfg
from scipy import sparse

from pipeline.data.tabular import TabularFeatures, skewed_positive, split_columns
from pipeline.errors import UserError
from pipeline.prepare import prepare
from pipeline.training.estimators import _fit, sklearn_estimator
from pipeline.training.fold_inputs import fold_datasets
from pipeline.training.job import fold_rows, model_id, resolved, spec, train_job
from pipeline.training.loaders import ArrayDataset

FAST = ["trainer.progress_bar=false", "cv.n_folds=3"]
CAP, PATIENCE = 300, 10  # rounds: small, so that every fit takes well under a second
SMALL = {  # each preset's own keys for them
    "tabular_lgbm": [
        f"model.head.estimator.n_estimators={CAP}",
        f"model.head.estimator.early_stopping_round={PATIENCE}",
    ],
    "tabular_xgb": [
        f"model.head.estimator.n_estimators={CAP}",
        f"model.head.estimator.early_stopping_rounds={PATIENCE}",
    ],
    "tabular_catboost": [
        f"model.head.estimator.iterations={CAP}",
        f"model.head.estimator.early_stopping_rounds={PATIENCE}",
    ],
    "tabular_hgb": [f"model.head.estimator.max_iter={CAP}", f"model.head.estimator.n_iter_no_change={PATIENCE}"],
}
FAST_LR = "model.head.estimator.learning_rate=0.3"  # the validation loss bottoms out within a few dozen rounds


# which input columns each fitted model treats as categorical
DECLARED = {
    "tabular_lgbm": lambda e: [bool(f["values"]) for f in e.booster_.dump_model()["feature_infos"].values()],
    "tabular_xgb": lambda e: [t == "c" for t in e.get_booster().feature_types],
    "tabular_catboost": lambda e: [i in e.get_cat_feature_indices() for i in range(e.n_features_in_)],
    "tabular_hgb": lambda e: e.is_categorical_.tolist(),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread per fit


def competition(root: Path, n: int = 300, seed: int = 0, skewed: bool = False) -> Path:
    """A regression table: y from a numeric column and a 6-level categorical whose effect is not monotone in its
    codes (so only category splits capture it cheaply); `skewed`: a lognormal target in the thousands."""
    rng = np.random.default_rng(seed)
    total = n + n // 4
    num = rng.normal(size=total)
    cat = rng.choice(list("abcdef"), total)
    effect = pd.Series(cat).map(dict(zip("abcdef", [0.0, 2.0, -1.0, 1.5, -2.0, 0.5], strict=True))).to_numpy()
    signal = num + effect + rng.normal(scale=0.5, size=total)
    y = np.exp(7 + 0.6 * signal) if skewed else signal
    df = pd.DataFrame({"id": np.arange(total), "num": num.round(4), "cat": cat, "y": y.round(4)})
    root.mkdir(parents=True, exist_ok=True)
    df.iloc[:n].to_csv(root / "train.csv", index=False)
    df.iloc[n:].drop(columns="y").to_csv(root / "test.csv", index=False)
    return root / "train.csv"


def config(train_csv: Path, out: Path, *overrides: str):
    return build_cfg(f"data.train_csv={train_csv}", "data.target=y", f"paths.output_dir={out}", *FAST, *overrides)


def first_fold(cfg):
    """The real data stage up to fold 0's inputs: (competition, datasets) as fit_sklearn receives them."""
    cfg = resolved(cfg)
    prep = prepare(cfg)
    _, rows = fold_rows(prep.folds)[0]
    datasets = fold_datasets(prep.comp, None, cfg, rows, prep.comp.y, prep.out_dir / "cache").datasets
    return cfg, prep.comp, datasets


@pytest.mark.parametrize("preset", list(SMALL))
def test_early_stopping_follows_the_folds_validation_rows(tmp_path, preset):
    """Validation rows that agree with the training rows let boosting run on; the same rows with the target
    negated make every further round worse, so it stops at once: the stop is decided on those rows."""
    cfg = config(competition(tmp_path / "c"), tmp_path / "out", f"model={preset}", *SMALL[preset], FAST_LR)
    cfg, comp, datasets = first_fold(cfg)
    _, rounds, _, _ = _fit(cfg, comp, sklearn_estimator(cfg.model.head.estimator, comp.task), datasets)
    val = datasets["val"].arrays
    flipped = {**datasets, "val": ArrayDataset({"tab": val["tab"].numpy(), "y": -val["y"].numpy()})}
    _, flipped_rounds, _, _ = _fit(cfg, comp, sklearn_estimator(cfg.model.head.estimator, comp.task), flipped)
    assert 3 <= rounds < CAP
    assert flipped_rounds <= PATIENCE + 1 < rounds


def test_best_iteration_in_history(tmp_path):
    cfg = config(competition(tmp_path / "c"), tmp_path / "out", "model=tabular_lgbm", *SMALL["tabular_lgbm"])
    metrics = train_job(cfg, prepare(cfg))
    hist = pd.read_csv(tmp_path / "out" / "models" / metrics["model_id"] / "history.csv")
    assert len(hist) == 3 and hist["best_iteration"].between(1, CAP - 1).all()


@pytest.mark.parametrize("preset", list(SMALL))
def test_native_categoricals_reach_the_estimator(tmp_path, preset):
    """data.categorical_encoding=native (tabular_catboost's own default): the code column is declared
    categorical to each library, and only that column."""
    cfg = config(
        competition(tmp_path / "c"),
        tmp_path / "out",
        f"model={preset}",
        *SMALL[preset],
        "model.categorical_encoding=native",
    )
    cfg, comp, datasets = first_fold(cfg)
    numeric, categorical = split_columns(comp.train, comp.feature_cols)
    assert (numeric, categorical) == (["num"], ["cat"])
    est = sklearn_estimator(cfg.model.head.estimator, comp.task)
    _fit(cfg, comp, est, datasets)
    assert DECLARED[preset](est) == [False, True]  # columns: num, cat


def test_sparse_input_makes_xgboost_read_zeros_as_missing(tmp_path):
    """model.sparse_input (with the raw values): XGBoost gets a sparse matrix, where a zero is a missing value to
    it (a row predicts as with NaN there); the dense matrix keeps a zero a value."""
    overrides = ["model=tabular_xgb", *SMALL["tabular_xgb"], FAST_LR, "model.numeric_scaling=none"]
    cfg = config(competition(tmp_path / "c"), tmp_path / "out", *overrides, "model.sparse_input=true")
    cfg, comp, datasets = first_fold(cfg)
    est = sklearn_estimator(cfg.model.head.estimator, comp.task)
    x, _, _, _ = _fit(cfg, comp, est, datasets)
    assert sparse.issparse(x["train"]) and sparse.issparse(x["test"])
    zero = x["test"].toarray()
    zero[:, 0] = 0.0  # column 0: `num`, as it is; then the one-hot columns of `cat`
    missing = np.where(zero == 0, np.nan, zero)
    np.testing.assert_allclose(est.predict(sparse.csr_matrix(zero)), est.predict(missing))
    assert not np.allclose(est.predict(zero), est.predict(missing))


def test_native_categoricals_need_an_estimator_that_takes_them(tmp_path):
    forest = "model.head.estimator={_target_: sklearn.ensemble.RandomForestRegressor, n_estimators: 5}"
    overrides = ["model=tabular", "model.head.type=sklearn", forest, "data.categorical_encoding=native"]
    cfg = config(competition(tmp_path / "c"), tmp_path / "out", *overrides)
    with pytest.raises(UserError, match="native: RandomForestRegressor cannot take categorical columns; use ordinal"):
        train_job(cfg, prepare(cfg))


def test_categorical_positions_match_the_fitted_names(tmp_path):
    train = pd.read_csv(competition(tmp_path / "c"))
    train.loc[::7, "num"] = np.nan  # a missing-value flag comes after the codes
    features = TabularFeatures(["num"], ["cat"], encoding="native").fit(train)
    assert [features.names[i] for i in features.categorical_positions] == ["cat__cat"]
    assert TabularFeatures(["num"], ["cat"], encoding="ordinal").categorical_positions == []


@pytest.mark.parametrize("head", [["model=tabular_lgbm", *SMALL["tabular_lgbm"]], ["model=tabular"]])
def test_log1p_predictions_come_back_in_target_units(tmp_path, head):
    """Trained on log(1 + y), scored and written as expm1(prediction): oof.csv is in the target's units and its
    RMSE is metrics.json's CV score."""
    train_csv = competition(tmp_path / "c", skewed=True)
    cfg = config(train_csv, tmp_path / "out", *head, "model.target_transform=log1p", "trainer.max_epochs=3")
    metrics = train_job(cfg, prepare(cfg))
    folder = tmp_path / "out" / "models" / metrics["model_id"]
    y = pd.read_csv(train_csv)["y"].to_numpy()
    oof = pd.read_csv(folder / "oof.csv")["prediction"].to_numpy()
    test = pd.read_csv(folder / "test.csv")["prediction"].to_numpy()
    assert skewed_positive(y) and metrics["model_id"].split("-")[2] == "log1p"
    assert 0.3 < np.median(oof) / np.median(y) < 3 and 0.3 < np.median(test) / np.median(y) < 3  # not ~7 (logs)
    assert metrics["cv_score"] == pytest.approx(np.sqrt(np.mean((oof - y) ** 2)))
    assert metrics["cv_score"] < y.std()


def test_log1p_rejected_where_it_does_not_fit(tmp_path):
    train_csv = competition(tmp_path / "c")  # y takes negative values
    cfg = config(train_csv, tmp_path / "out", "model=tabular_lgbm", "model.target_transform=log1p")
    with pytest.raises(UserError, match="model.target_transform=log1p needs a target >= 0, but 'y' goes down to -"):
        train_job(cfg, prepare(cfg))
    with pytest.raises(UserError, match="unknown model.target_transform 'log': choose one of none, log1p"):
        train_job(config(train_csv, tmp_path / "out", "model=tabular", "model.target_transform=log"), prepare(cfg))


def test_skewed_positive() -> None:
    rng = np.random.default_rng(0)
    assert skewed_positive(rng.lognormal(12, 0.5, 1000))  # prices
    assert not skewed_positive(rng.normal(size=1000))  # negative values
    assert not skewed_positive(rng.uniform(1, 2, 1000))  # positive, no tail
    assert not skewed_positive(np.ones(10))


@pytest.mark.parametrize(
    ("overrides", "head"),
    [
        (["model=tabular_hgb"], "tabular-histgradientboostingregressor-s0-"),
        (["model=tabular_lgbm"], "tabular-lgbmregressor-s0-"),
        (["model=tabular_xgb"], "tabular-xgbregressor-s0-"),
        (["model=tabular_catboost"], "tabular-catboostregressor-native-s0-"),
        (["model=tabular_lgbm", "data.categorical_encoding=ordinal"], "tabular-lgbmregressor-ordinal-s0-"),
        (["model=tabular", "model.target_transform=log1p"], "tabular-mlp128x64-log1p-s0-"),
    ],
)
def test_model_id_names_what_is_trained(tmp_path, overrides, head):
    cfg = config(tmp_path / "c" / "train.csv", tmp_path / "out", *overrides)
    assert model_id(cfg, "regression").startswith(head)
    assert model_id(cfg, "binary").startswith(head.replace("regressor", "classifier"))


def test_model_id_follows_the_encoding_actually_used(tmp_path):
    """A preset's own encoding wins over the data's; every encoding gets its own id, and the default (no
    preset encoding, no transform) keeps the id it had before these keys existed."""
    train_csv = tmp_path / "c" / "train.csv"
    ids = {
        enc: model_id(config(train_csv, tmp_path, "model=tabular_lgbm", f"model.categorical_encoding={enc}"))
        for enc in ("onehot", "ordinal", "native")
    }
    assert len(set(ids.values())) == 3
    by_data = config(train_csv, tmp_path, "model=tabular_lgbm", "data.categorical_encoding=native")
    assert model_id(by_data) == ids["native"]  # the same training, whichever group named it
    catboost = config(train_csv, tmp_path, "model=tabular_catboost", "data.categorical_encoding=onehot")
    assert resolved(catboost).data.categorical_encoding == "native"
    assert "target_transform" not in spec(config(train_csv, tmp_path, "model=tabular"))["model"]


def house_sales(root: Path, n: int = 1500) -> Path:
    """Skewed prices from a heavy-tailed living area (price ~ area^0.8), plus two heavy-tailed columns unrelated to
    the price (mostly 0, huge in a few rows), a categorical, and 4 unfinished sales: 6x the area at an ordinary
    price (Ames has such rows). An MLP that extrapolates from z-scores of 15-25 wrecks the fold holding them."""
    rng = np.random.default_rng(0)
    area = rng.lognormal(7, 0.5, n)
    misc = np.where(rng.random(n) < 0.03, rng.lognormal(8, 1.5, n), 0.0)
    pool = np.where(rng.random(n) < 0.01, rng.lognormal(6, 0.5, n), 0.0)
    cat = rng.choice(list("abcd"), n, p=[0.4, 0.3, 0.2, 0.1])
    effect = pd.Series(cat).map({"a": 0.0, "b": 0.2, "c": -0.2, "d": 0.4}).to_numpy()
    price = np.exp(9 + 0.8 * np.log(area) + effect + rng.normal(0, 0.1, n))
    area[rng.choice(n, 4, replace=False)] *= 6
    columns = {"area": area, "misc": misc, "pool": pool}
    df = pd.DataFrame(
        {"id": np.arange(n), **{k: v.round(1) for k, v in columns.items()}, "cat": cat, "y": price.round()}
    )
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "train.csv", index=False)
    df.head(20).drop(columns="y").to_csv(root / "test.csv", index=False)
    return root / "train.csv"


@pytest.mark.slow
def test_mlp_regression_folds_do_not_diverge(tmp_path):
    """The default MLP (clipped z-scores, no batch norm) keeps every fold within 30 % of the best one, for 2 seeds.
    Measured on this table (3 folds): max/min fold RMSE 1.06-1.07; with the former defaults (plain z-scores, batch
    norm, unclipped predictions) 1.62-1.94, the fold holding the unfinished sales off by 2x."""
    train_csv = house_sales(tmp_path / "c")
    for seed in (0, 1):
        cfg = config(train_csv, tmp_path / "out", "model=tabular", f"seed={seed}")
        scores = np.array(train_job(cfg, prepare(cfg))["fold_scores"])
        assert scores.max() / scores.min() < 1.3, scores
