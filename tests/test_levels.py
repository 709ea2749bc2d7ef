"""Hill climbing with negative weights and the second stack level, on synthetic competitions (tests/test_ensemble.py's
`Fake`) whose right answers are known."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_ensemble import Fake, load, make_fake

from pipeline.ensembling.hillclimb import HillClimb
from pipeline.ensembling.levels import Level2, within_fold_gain
from pipeline.ensembling.registry import build_methods
from pipeline.ensembling.scoring import evaluate_method, score
from pipeline.ensembling.stacking import Stacking
from pipeline.errors import UserError
from pipeline.schema import check_command_line

# level-2 boosted trees small enough for a test: 30 rounds without early stopping (a few dozen rows per fit)
SMALL_GBM = [
    "ensemble.level2.classifiers.gbm.max_iter=30",
    "ensemble.level2.classifiers.gbm.early_stopping=false",
]


def shared_noise(fake: Fake) -> None:
    """Regression members `a` = y + c and `b` = y + 2c share the noise c: (1 + w) a - w b, w = 1, cancels it;
    non-negative weights can do no better than `a` alone."""
    rng = np.random.default_rng(0)
    preds = {"a": [], "b": []}
    for y in (fake.y, fake.y_test):
        c = rng.normal(size=len(y))
        for name, share in (("a", 1), ("b", 2)):
            preds[name].append(y + share * c + 0.3 * rng.normal(size=len(y)))
    for name, (oof, test) in preds.items():
        fake.member(name, oof, test)


def test_hillclimb_subtracts_a_member_that_shares_the_best_ones_noise(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, task="regression", n=500, n_test=500)
    shared_noise(fake)
    scores = {}
    for method in ("weighted", "hillclimb"):
        cfg, ctx, stack = load(fake, f"ensemble.method={method}")
        scores[method] = evaluate_method(build_methods(cfg.ensemble, ctx, stack)[0], stack, ctx.metric)
    hill, weighted = scores["hillclimb"], scores["weighted"]
    weights = hill.method.weights_
    assert weights[1] < -0.5 and weights.sum() == pytest.approx(1.0)  # several steps go past one step's -0.5
    assert weighted.method.weights_.tolist() == [1.0, 0.0]
    # rmse: lower is better, on the nested CV and on the test rows alike
    assert hill.score.cv_mean < weighted.score.cv_mean - 0.1 and hill.score.test < weighted.score.test - 0.1


def test_hillclimb_without_negative_weights_stays_on_the_simplex(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, task="regression", n=300, n_test=50)
    shared_noise(fake)
    cfg, ctx, stack = load(fake, "ensemble.method=hillclimb", "ensemble.hillclimb.negative=false")
    method = build_methods(cfg.ensemble, ctx, stack)[0].fit(stack.oof, stack.y)
    assert (method.weights_ >= 0).all() and method.weights_.sum() == pytest.approx(1.0)
    assert method.grid().tolist() == pytest.approx(np.arange(1, 11) * 0.05)


def test_saved_hillclimb_predicts_its_test_predictions(tmp_path: Path) -> None:
    """ensemble.skops round trip (what `make predict` applies after the members): the same test predictions."""
    from pipeline.ensembling.saved import apply_ensemble, load_ensemble, save_ensemble

    fake = make_fake(tmp_path, task="regression", n=300, n_test=50)
    shared_noise(fake)
    cfg, ctx, stack = load(fake, "ensemble.method=hillclimb")
    entry = evaluate_method(build_methods(cfg.ensemble, ctx, stack)[0], stack, ctx.metric)
    save_ensemble(tmp_path, entry.name, entry.method, stack.names)
    saved = load_ensemble(tmp_path)
    np.testing.assert_array_equal(apply_ensemble(saved, stack.test, pd.DataFrame()), entry.test_pred)
    assert (saved["method"].weights_ < 0).any()


def test_hillclimb_probabilities_stay_probabilities(tmp_path: Path) -> None:
    """A negative weight can push a blend of probabilities outside [0, 1]: the output is clipped and renormalized."""
    fake = make_fake(tmp_path, task="multiclass", n=300, n_test=100)
    rng = np.random.default_rng(0)
    good = np.eye(3)[fake.y] * 0.8 + 0.2 * rng.dirichlet(np.ones(3), len(fake.y))
    fake.member("a", good, rng.dirichlet(np.ones(3), 100))
    fake.member("b", rng.dirichlet(np.ones(3) * 0.2, len(fake.y)), rng.dirichlet(np.ones(3) * 0.2, 100))
    _, ctx, stack = load(fake)
    method = HillClimb(ctx.metric).fit(stack.oof, stack.y)
    method.weights_ = np.array([1.5, -0.5])
    pred = method.predict(stack.test)
    assert pred.min() >= 0 and np.allclose(pred.sum(axis=1), 1, atol=1e-6)


def by_region(fake: Fake) -> None:
    """Member `a` is right on the rows where feature c is red and confidently random elsewhere, `b` the reverse: no
    weighting of the two fits both regions; a level-2 model that sees c learns whom to trust where."""
    rng = np.random.default_rng(0)
    colors = {f: pd.read_csv(fake.data / f"{f}.csv")["c"].to_numpy() for f in ("train", "test")}
    for name, color in (("a", "red"), ("b", "blue")):
        preds = []
        for y, c in ((fake.y, colors["train"]), (fake.y_test, colors["test"])):
            logit = np.where(c == color, 2.0 * (2 * y - 1) + rng.normal(size=len(y)), 3 * rng.normal(size=len(y)))
            p = 1 / (1 + np.exp(-logit))
            preds.append(np.c_[1 - p, p].round(6))
        fake.member(name, *preds)


def test_level2_learns_where_each_member_is_right(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, n=600, n_test=600)
    by_region(fake)
    no_guard = ("ensemble.level2.guard=false", "~ensemble.level2.classifiers.linear")  # tested on their own
    cfg, ctx, stack = load(fake, "ensemble.method=level2", *no_guard, *SMALL_GBM)
    level2 = evaluate_method(build_methods(cfg.ensemble, ctx, stack)[0], stack, ctx.metric)
    cfg, ctx, stack = load(fake, "ensemble.method=weighted")
    weighted = evaluate_method(build_methods(cfg.ensemble, ctx, stack)[0], stack, ctx.metric)
    assert level2.score.cv_mean > weighted.score.cv_mean + 0.05 and level2.score.test > weighted.score.test + 0.05
    info = level2.method.describe(stack.names)
    assert info["levels"] == 2 and set(info["weights"]) == {"a", "b", "level2:gbm"}
    assert info["weights"]["level2:gbm"] > 0.5


def test_the_guard_keeps_level2_where_it_pays(tmp_path: Path) -> None:
    """It fits level 2 on a quarter of a fold (here 100 rows), so it needs more rows than level 2 itself."""
    fake = make_fake(tmp_path, n=2000, n_test=50)
    by_region(fake)
    cfg, ctx, stack = load(fake, "ensemble.method=level2", *SMALL_GBM, "~ensemble.level2.classifiers.linear")
    method = build_methods(cfg.ensemble, ctx, stack)[0]
    guard = within_fold_gain(method, stack.oof, stack.y, stack.X, stack.folds)
    assert guard["gain"] > 2 * guard["se"] > 0 and len(guard["per_fold"]) == 5


def memorizable(fake: Fake) -> None:
    """Members of pure noise, unique per row: a deep tree on them memorizes every label it is fitted on."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        fake.member(name, rng.dirichlet((1, 1), len(fake.y)).round(6), rng.dirichlet((1, 1), len(fake.y_test)).round(6))


def test_level2_is_scored_on_no_rows_own_label_and_the_guard_on_none_it_fitted(tmp_path: Path) -> None:
    """A level-2 tree that memorizes its rows (in-sample accuracy 1.0) on members of pure noise: nested CV stays at
    chance like the test rows, and the guard, which scores halves of folds that no fit saw, refuses level 2."""
    from sklearn.tree import DecisionTreeClassifier

    fake = make_fake(tmp_path, n=400, n_test=2000, metric="accuracy")
    memorizable(fake)
    _, ctx, stack = load(fake)
    tree = {"tree": Stacking(DecisionTreeClassifier(random_state=0))}
    method = Level2(tree, ctx.metric, keep_level1=False, guard=False)
    naive_pred = copy.deepcopy(method).fit(stack.oof, stack.y, folds=stack.folds).predict(stack.oof)
    naive = score(ctx.metric, stack.y, naive_pred, stack.folds)  # fitted and scored on the same rows
    honest = evaluate_method(method, stack, ctx.metric).score
    assert naive.cv_mean > 0.7 and abs(honest.cv_mean - 0.5) < 0.06 and abs(honest.test - 0.5) < 0.04
    guarded = Level2(tree, ctx.metric, keep_level1=False).fit(stack.oof, stack.y, folds=stack.folds)
    assert guarded.guard_["gain"] <= 0 and guarded.levels_ == 1 and guarded.inputs(stack.names) == ["a", "b"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["ensemble.levels=3"], r"ensemble.levels=3 is not allowed: choose 1 or 2"),
        (["ensemble.levels=2", "ensemble.method=weighted"], r"ensemble.levels=2 adds level2 .*method=weighted"),
        (
            [
                "ensemble.method=level2",
                "~ensemble.level2.classifiers.gbm",
                "~ensemble.level2.classifiers.linear",
            ],
            r"ensemble.level2.classifiers is empty: give at least one level-2 member",
        ),
        (
            [
                "ensemble.method=level2",
                "ensemble.level2.classifiers.gbm._target_=sklearn.linear_model.Ridge",
                "~ensemble.level2.classifiers.gbm.learning_rate",
                "~ensemble.level2.classifiers.gbm.max_iter",
                "~ensemble.level2.classifiers.gbm.max_leaf_nodes",
                "~ensemble.level2.classifiers.gbm.l2_regularization",
                "~ensemble.level2.classifiers.gbm.early_stopping",
                "~ensemble.level2.classifiers.gbm.random_state",
            ],
            r"ensemble.level2.classifiers.gbm must be a classifier with predict_proba",
        ),
        (
            ["ensemble.method=hillclimb", "ensemble.hillclimb.step=0.7"],
            r"ensemble.hillclimb.step=0.7 must be in \(0, 0.5\]",
        ),
    ],
    ids=["levels 3", "levels without auto", "no level-2 member", "a regressor as level-2 classifier", "step 0.7"],
)
def test_bad_settings_are_one_line_user_errors(tmp_path: Path, overrides: list[str], match: str) -> None:
    fake = make_fake(tmp_path, n=100, n_test=10)
    fake_member = np.random.default_rng(0).dirichlet((1, 1), len(fake.y))
    fake.member("m", fake_member, np.random.default_rng(1).dirichlet((1, 1), len(fake.y_test)))
    cfg, ctx, stack = load(fake, *overrides)
    with pytest.raises(UserError, match=match):
        build_methods(cfg.ensemble, ctx, stack)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["ensemble.levels=3"], r"ensemble.levels=3 is not allowed: expected an integer >= 1 and <= 2"),
        (
            ["ensemble.hillclimb.step=0"],
            r"ensemble.hillclimb.step=0 is not allowed: expected a finite number > 0 and <= 0.5",
        ),
        (["ensemble.level2.guard=maybe"], r"ensemble.level2.guard='maybe' is not allowed: expected true or false"),
    ],
)
def test_bad_settings_on_the_command_line(argv: list[str], match: str) -> None:
    with pytest.raises(UserError, match=match):
        check_command_line("ensemble", argv)


def test_a_level2_member_that_cannot_fit_half_a_fold_keeps_level1(tmp_path: Path, caplog) -> None:
    """Early stopping's stratified split needs two rows of every class: with 3 rows of class 2 in all, half a fold
    holds at most one, the guard cannot fit level 2 there and keeps level 1, with a warning instead of a traceback."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = np.resize([0, 1], 300)
    y[[5, 150, 250]] = 2
    fake = make_fake(tmp_path, task="multiclass", n=300, n_test=10)
    fake.y[:] = y
    rng = np.random.default_rng(0)
    fake.member("m", rng.dirichlet((1, 1, 1), 300).round(6), rng.dirichlet((1, 1, 1), 10).round(6))
    _, ctx, stack = load(fake)
    gbm = HistGradientBoostingClassifier(max_iter=5, early_stopping=True, random_state=0)
    method = Level2({"gbm": Stacking(gbm)}, ctx.metric).fit(stack.oof, y, folds=stack.folds)
    assert method.levels_ == 1 and method.guard_["gain"] is None and "level 1 alone is kept" in caplog.text
    assert "least populated class" in method.guard_["error"]
