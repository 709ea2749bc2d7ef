"""The ensemble stage on synthetic competitions whose right answers are known.

`Fake` writes what the training stage leaves behind (competition.json, folds.csv/json, the data files and
member folders) into `tmp_path`, with members built from the true target plus controlled noise.
"""

import copy
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_cfg
from omegaconf import DictConfig

from pipeline import ensemble  # importing `pipeline` registers the config resolvers
from pipeline.data.contract import file_hash
from pipeline.ensembling.members import add_features, load_context, load_stack
from pipeline.ensembling.methods import Mean, Rank, Selected
from pipeline.ensembling.registry import build_methods
from pipeline.ensembling.scoring import (
    SELECTIONS,
    Entry,
    Score,
    best_member,
    choose,
    evaluate_members,
    evaluate_method,
    score,
)
from pipeline.ensembling.weighted import Weighted, batch_scorer
from pipeline.errors import UserError
from pipeline.metrics import get_metric

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"binary": ["no", "yes"], "multiclass": ["ant", "bee", "cat"], "regression": None}
METRIC = {"binary": "roc_auc", "multiclass": "logloss", "regression": "rmse"}


@dataclass
class Fake:
    """A competition's data folder and the training stage's outputs for it; `member()` adds a model folder."""

    data: Path
    out: Path
    info: dict
    y: np.ndarray  # encoded training target
    y_test: np.ndarray
    folds: np.ndarray

    @property
    def columns(self) -> list[str]:
        classes = self.info["classes"]
        return ["prediction"] if classes is None else [str(c) for c in classes]

    def member(self, name: str, oof: np.ndarray, test: np.ndarray, **metrics: object) -> Path:
        folder = self.out / "models" / name
        folder.mkdir(parents=True)
        for file, values, ids in (("oof.csv", oof, self.ids), ("test.csv", test, self.test_ids)):
            frame = pd.DataFrame(np.asarray(values).reshape(len(ids), -1), columns=self.columns)
            frame.insert(0, "id", ids)
            frame.to_csv(folder / file, index=False)
        info = {
            "model_id": name,
            "metric": self.info["metric"],
            "folds_hash": self.info["folds_hash"],
            "data_hash": self.info["data_hash"],
            "task": self.info["task"],
            "classes": self.info["classes"],
        }
        (folder / "metrics.json").write_text(json.dumps({**info, **metrics}))
        return folder

    @property
    def ids(self) -> np.ndarray:
        return np.arange(len(self.y))

    @property
    def test_ids(self) -> np.ndarray:
        return np.arange(len(self.y), len(self.y) + len(self.y_test))

    def overrides(self, *extra: str) -> list[str]:
        return [
            "data=csv",
            f"data.train_csv={self.data / 'train.csv'}",
            "data.target=label",
            "name=fake",
            f"paths.output_dir={self.out}",
            *extra,
        ]


def labels_of(codes: np.ndarray, classes: list | None) -> np.ndarray:
    return codes if classes is None else np.asarray(classes, dtype=object)[codes]


def make_fake(
    root: Path,
    task: str = "binary",
    n: int = 600,
    n_test: int = 600,
    sample: str | None = "auto",
    metric: str | None = None,
    folds: np.ndarray | None = None,
    seed: int = 0,
) -> Fake:
    """Write a competition: train/test/test_labels/sample_submission CSVs, competition.json, folds."""
    rng = np.random.default_rng(seed)
    classes = CLASSES[task]
    y_all = rng.normal(size=n + n_test) if classes is None else rng.integers(0, len(classes), n + n_test)
    data, out = root / "data" / "fake", root / "outputs" / "fake"
    data.mkdir(parents=True), out.mkdir(parents=True)
    frame = pd.DataFrame(
        {
            "id": np.arange(n + n_test),
            "x": y_all + rng.normal(size=n + n_test),
            "c": rng.choice(["red", "blue"], n + n_test),
            "label": labels_of(y_all, classes),
        }
    )
    frame[:n].to_csv(data / "train.csv", index=False)
    frame[n:].drop(columns="label").to_csv(data / "test.csv", index=False)
    frame[n:][["id", "label"]].to_csv(data / "test_labels.csv", index=False)
    metric = metric or METRIC[task]
    sample_path = _write_sample(data, frame[n:]["id"].to_numpy(), task, sample, rng)
    folds = np.resize(np.arange(5), n)[rng.permutation(n)] if folds is None else folds
    pd.DataFrame({"id": np.arange(n), "fold": folds}).to_csv(out / "folds.csv", index=False)
    data_hash = file_hash(data / "train.csv")
    (out / "folds.json").write_text(json.dumps({"folds_hash": "f01d5", "data_hash": data_hash}))
    info = {
        "task": task,
        "metric": metric,
        "classes": classes,
        "id_col": "id",
        "target": "label",
        "train_csv": str(data / "train.csv"),
        "n_train": n,
        "n_test": n_test,
        "data_hash": data_hash,
        "folds_hash": "f01d5",
        "sample_submission": sample_path,
        "feature_cols": ["x", "c"],
        "image_col": None,
        "text_col": None,
    }
    (out / "competition.json").write_text(json.dumps(info))
    return Fake(data, out, info, y_all[:n], y_all[n:], folds)


def _write_sample(data: Path, ids: np.ndarray, task: str, kind: str | None, rng) -> str | None:
    """A sample submission in shuffled id order: probabilities (`proba`), `labels`, or per-class columns."""
    if kind is None:
        return None
    kind = {"binary": "proba", "multiclass": "per_class", "regression": "values"}[task] if kind == "auto" else kind
    sample = pd.DataFrame({"id": rng.permutation(ids)})
    if kind == "per_class":
        for c in CLASSES[task]:
            sample[c] = 1 / len(CLASSES[task])
    else:
        sample["label"] = CLASSES[task][0] if kind == "labels" else 0.5
    sample.to_csv(data / "sample_submission.csv", index=False)
    return str(data / "sample_submission.csv")


def noisy(y: np.ndarray, task: str, signal: float, rng: np.random.Generator, mask=None) -> np.ndarray:
    """Predictions that know the target with strength `signal` (0: pure noise), only on `mask` rows."""
    keep = np.ones(len(y), bool) if mask is None else mask
    if task == "regression":
        return np.where(keep, y * signal, 0) + rng.normal(size=len(y))
    k = len(CLASSES[task])
    logits = rng.normal(size=(len(y), k)) + signal * np.eye(k)[y] * keep[:, None]
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).round(6)


def compose_cfg(fake: Fake, *extra: str) -> DictConfig:
    return build_cfg(*fake.overrides(*extra), entry="ensemble")


def load(fake: Fake, *extra: str):
    cfg = compose_cfg(fake, *extra)
    ctx = load_context(fake.out, cfg.data)
    return cfg, ctx, load_stack(ctx, cfg.ensemble)


def run_main(fake: Fake, capsys, *extra: str) -> str:
    """The entry point's body, in-process (hydra.main accepts a composed config); returns its stdout."""
    ensemble.main(compose_cfg(fake, *extra))
    return capsys.readouterr().out


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return make_fake(tmp_path)


def two_complementary(fake: Fake, task: str = "binary") -> None:
    """Member `a` knows the target on even rows only, `b` on odd rows only: each is half-blind."""
    rng = np.random.default_rng(1)
    for name, parity in (("a", 0), ("b", 1)):
        oof = noisy(fake.y, task, 4.0, rng, fake.ids % 2 == parity)
        test = noisy(fake.y_test, task, 4.0, rng, fake.test_ids % 2 == parity)
        fake.member(name, oof, test)


@pytest.mark.parametrize("method", ["mean", "rank", "geometric", "vote", "weighted", "stacking"])
def test_complementary_members_ensemble_beats_both(fake: Fake, method: str) -> None:
    two_complementary(fake)
    cfg, ctx, stack = load(fake, f"ensemble.method={method}")
    members = [score(ctx.metric, stack.y, p, stack.folds).cv_mean for p in stack.oof]
    entry = evaluate_method(build_methods(cfg.ensemble, ctx, stack)[0], stack, ctx.metric)
    assert entry.score.cv_mean > max(members) + 0.05
    tests = [ctx.metric(stack.test_y, p) for p in stack.test]
    assert entry.score.test > max(tests) + 0.05


@pytest.mark.parametrize("method", ["weighted", "stacking"])
def test_nested_fits_in_threads_give_the_serial_result(fake: Fake, method: str) -> None:
    two_complementary(fake)
    cfg, ctx, stack = load(fake, f"ensemble.method={method}")
    serial, threads = (
        evaluate_method(build_methods(cfg.ensemble, ctx, stack)[0], stack, ctx.metric, n_jobs) for n_jobs in (1, 2)
    )
    assert serial.score == threads.score
    np.testing.assert_array_equal(serial.test_pred, threads.test_pred)


def _entry(kind: str, name: str, folds: list[float]) -> Entry:
    return Entry(kind, name, Score(float(np.mean(folds)), float(np.std(folds)), 0.0, folds), np.zeros((1, 1)))


def test_selection_rules_on_known_fold_scores() -> None:
    m = get_metric("logloss", "binary")  # lower is better: the rules must follow the direction
    member = _entry("member", "a", [0.30, 0.32, 0.31, 0.33, 0.29])
    worse = _entry("member", "b", [0.40, 0.42, 0.41, 0.43, 0.39])
    # 0.004 better on average, with a standard error of 0.0068 over the 5 folds: within its noise
    noisy = _entry("method", "weighted", [0.28, 0.34, 0.30, 0.32, 0.29])
    assert choose([worse, member, noisy], m) is member
    assert choose([worse, member, noisy], m, "one_se") is member
    assert choose([worse, member, noisy], m, "best") is noisy
    clear = _entry("method", "stacking", [0.28, 0.30, 0.29, 0.31, 0.27])  # 0.02 better on every fold
    assert choose([member, noisy, clear], m) is clear
    assert choose([member, noisy, clear], m, "one_se") is clear
    # trails the member by CV (0.315 vs 0.31), yet within one SE (0.034) of `clear`: one_se must skip it
    loose = _entry("method", "mean", [0.38, 0.25, 0.39, 0.26, 0.295])
    assert choose([member, loose, clear], m, "one_se") is clear
    assert choose([member, loose], m, "one_se") is member
    with pytest.raises(UserError, match="unknown ensemble.select 'worst': choose one of gain, best, one_se"):
        choose([member], m, "worst")


def test_gain_is_measured_against_the_member_chosen_out_of_fold() -> None:
    """The best member's own CV is the best of many (flattered); `honest` is that choice scored by nested CV."""
    m = get_metric("logloss", "binary")
    member = _entry("member", "a", [0.30, 0.32, 0.31, 0.33, 0.29])
    noisy = _entry("method", "weighted", [0.28, 0.34, 0.30, 0.32, 0.29])  # within the noise of the flattered CV
    honest = _entry("method", "best_member", [0.33, 0.35, 0.33, 0.35, 0.32])  # other folds chose others at times
    assert choose([member, noisy], m) is member
    assert choose([member, noisy], m, honest=honest) is noisy
    behind = _entry("method", "mean", [0.31, 0.33, 0.32, 0.33, 0.31])  # beats `honest`, trails the member's CV
    assert choose([member, behind], m, honest=honest) is member


def test_selected_picks_the_best_member_on_its_rows() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    good = np.stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1], axis=1)
    bad = good[:, ::-1]
    sel = Selected(get_metric("roc_auc", "binary")).fit(np.stack([bad, good]), y)
    assert sel.index_ == 1 and np.array_equal(sel.predict(np.stack([bad, good])), good)
    assert sel.describe(["bad", "good"]) == {"member": "good", "weights": {"bad": 0.0, "good": 1.0}}


def one_strong_and_noisy(fake: Fake, seed: int = 0) -> None:
    """An accurate member (test AUC ~0.98) and four that barely know the target (~0.6): nothing to combine."""
    rng = np.random.default_rng(seed)
    fake.member("strong", noisy(fake.y, "binary", 3.0, rng), noisy(fake.y_test, "binary", 3.0, rng))
    for i in range(4):
        fake.member(f"weak{i}", noisy(fake.y, "binary", 0.3, rng), noisy(fake.y_test, "binary", 0.3, rng))


def test_auto_submits_the_best_member_when_no_method_beats_it(fake: Fake, capsys) -> None:
    one_strong_and_noisy(fake)
    out = run_main(fake, capsys)
    board = pd.read_csv(fake.out / "leaderboard.csv").set_index("name")
    assert board["chosen"].sum() == 1 and board.loc["strong", "chosen"]
    sub = pd.read_csv(fake.out / "submission.csv")
    member_test = pd.read_csv(fake.out / "models" / "strong" / "test.csv").set_index("id")
    np.testing.assert_allclose(sub["label"], member_test.loc[sub["id"], "yes"], atol=1e-6)
    weights = json.loads((fake.out / "weights.json").read_text())
    assert weights["method"] == "best_member" and weights["best_member"] == "strong"
    assert weights["methods"]["best_member"]["weights"] == {"strong": 1.0, **{f"weak{i}": 0.0 for i in range(4)}}
    assert list(weights["methods"])[0] == "best_member"  # the chosen one first
    prov = json.loads((fake.out / "provenance.json").read_text())
    assert prov["method"] == "best_member" and prov["best_member"] == "strong"
    assert prov["weights"]["strong"] == 1.0 and prov["test_score"] == board.loc["strong", "test_score"]
    assert "chosen: the best member strong" in out and "not beyond its noise" in out


def test_a_named_method_is_submitted_even_below_the_best_member(fake: Fake, capsys) -> None:
    one_strong_and_noisy(fake)
    run_main(fake, capsys, "ensemble.method=mean")
    board = pd.read_csv(fake.out / "leaderboard.csv").set_index("name")
    assert board.loc["mean", "chosen"] and board.loc["mean", "gain_vs_best"] < 0


def independent_equals(fake: Fake, n_members: int = 6) -> None:
    """Members of equal quality (AUC ~0.75) with independent errors: their average is far better (~0.9)."""
    rng = np.random.default_rng(0)
    for i in range(n_members):
        fake.member(f"m{i}", noisy(fake.y, "binary", 1.0, rng), noisy(fake.y_test, "binary", 1.0, rng))


def test_auto_combines_members_whose_errors_are_independent(fake: Fake, capsys) -> None:
    independent_equals(fake)
    out = run_main(fake, capsys)
    board = pd.read_csv(fake.out / "leaderboard.csv")
    chosen = board[board["chosen"]].iloc[0]
    assert chosen["kind"] == "method" and chosen["gain_vs_best"] > chosen["gain_se"] > 0
    assert chosen["test_gain_vs_best"] > 0.05
    assert f"chosen: {chosen['name']} " in out and "over the best member" in out
    assert json.loads((fake.out / "provenance.json").read_text())["method"] == chosen["name"]


def test_leaderboard_shows_each_gain_over_the_best_member_with_its_noise(fake: Fake, capsys) -> None:
    independent_equals(fake, 3)
    out = run_main(fake, capsys)
    board = pd.read_csv(fake.out / "leaderboard.csv").set_index("name")
    assert {"gain_vs_best", "gain_se", "test_gain_vs_best"} <= set(board.columns)
    members = board[board["kind"] == "member"]
    best = members["cv_mean"].idxmax()  # roc_auc: greater is better
    assert board.loc[best, ["gain_vs_best", "gain_se", "test_gain_vs_best"]].tolist() == [0, 0, 0]
    # a mean of paired per-fold differences is the difference of the CV means; the SE comes from their spread
    np.testing.assert_allclose(board["gain_vs_best"], board["cv_mean"] - board.loc[best, "cv_mean"], atol=1e-12)
    np.testing.assert_allclose(board["test_gain_vs_best"], board["test_score"] - board.loc[best, "test_score"])
    assert (board["gain_se"] >= 0).all() and (board.drop(best)["gain_se"] > 0).all()
    assert "gain_vs_best" in out and " +- " in out and "per fold (test +" in out


def near_copies(y: np.ndarray, n_members: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One model's predictions plus a little noise each, the more the later member (as seeds of one recipe):
    every combination lands within noise of the best copy, above or below it."""
    base = rng.normal(size=(len(y), 2)) + np.eye(2)[y]
    out = []
    for i in range(n_members):
        # noise only: a term in y would let stacking read the label from the copies' differences
        p = np.exp(base + (0.1 + 0.05 * i) * rng.normal(size=base.shape))
        out.append((p / p.sum(axis=1, keepdims=True)).round(6))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_no_rule_submits_a_method_below_the_best_member(tmp_path: Path, seed: int) -> None:
    fake = make_fake(tmp_path, n=400, n_test=50, seed=seed)
    rng = np.random.default_rng(seed)
    for i, (oof, test) in enumerate(zip(near_copies(fake.y, 8, rng), near_copies(fake.y_test, 8, rng), strict=True)):
        fake.member(f"copy{i}", oof, test)
    cfg, ctx, stack = load(fake)
    entries = evaluate_members(stack, ctx.metric)
    entries += [evaluate_method(m, stack, ctx.metric) for m in build_methods(cfg.ensemble, ctx, stack)]
    best = best_member(entries, ctx.metric)
    for select in SELECTIONS:
        chosen = choose(entries, ctx.metric, select)
        assert chosen is best or chosen.score.cv_mean > best.score.cv_mean, select


def test_auto_picks_best_method_and_writes_everything(fake: Fake, capsys) -> None:
    two_complementary(fake)
    out = run_main(fake, capsys)
    board = pd.read_csv(fake.out / "leaderboard.csv")
    assert set(board["name"]) == {"a", "b", "mean", "rank", "geometric", "vote", "weighted", "stacking"}
    assert {"cv_mean", "cv_std", "oof_score", "test_score", "chosen"} <= set(board.columns)
    chosen = board[board["chosen"]]
    assert len(chosen) == 1 and chosen["kind"].item() == "method"
    methods = board[board["kind"] == "method"]
    assert chosen["cv_mean"].item() == methods["cv_mean"].max()  # roc_auc: greater is better
    for file in ("weights.json", "provenance.json", "correlation.png", "submission.csv"):
        assert (fake.out / file).stat().st_size > 0
    prov = json.loads((fake.out / "provenance.json").read_text())
    assert prov["method"] == chosen["name"].item() and prov["folds_hash"] == "f01d5"
    assert [m["model_id"] for m in prov["members"]] == ["a", "b"]
    weighted = json.loads((fake.out / "weights.json").read_text())["methods"]["weighted"]
    assert np.isclose(sum(weighted["weights"].values()), 1) and weighted["trajectory"][0]["added"] in ("a", "b")
    assert "over the best member" in out
    assert out.strip().splitlines()[-1] == f"submission: {fake.out / 'submission.csv'}"


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression(tmp_path: Path, capsys, task: str) -> None:
    fake = make_fake(tmp_path, task=task, n=300, n_test=200)
    two_complementary(fake, task)
    run_main(fake, capsys)
    board = pd.read_csv(fake.out / "leaderboard.csv").set_index("name")
    expected = {"mean", "weighted", "stacking"} | ({"rank", "geometric", "vote"} if task != "regression" else set())
    assert set(board.index[board["kind"] == "method"]) == expected
    chosen = board[board["chosen"]]["cv_mean"].item()
    assert chosen < board.loc[["a", "b"], "cv_mean"].min()  # logloss and rmse: lower is better
    assert np.isfinite(board["test_score"]).all()


def test_honest_cv_of_fitted_methods(tmp_path: Path) -> None:
    """Members that match the training labels only by chance (30 pure-noise members, 1000 rows): fitted and
    scored on the same OOF rows, Caruana looks clearly better than chance; nested over the folds it stays at
    chance, like its true test score.

    Why not "a member that leaks the labels into every OOF row": such a leak is in the inputs themselves, so
    every score computed from OOF rows (nested or not) inherits it; only the test score shows it. Nested CV
    guards against what the ensemble itself learns, which is what this test and the next one measure.
    """
    fake = make_fake(tmp_path, n=1000, n_test=3000, metric="accuracy")
    rng = np.random.default_rng(0)
    for i in range(30):
        fake.member(f"noise{i:02d}", noisy(fake.y, "binary", 0, rng), noisy(fake.y_test, "binary", 0, rng))
    cfg, ctx, stack = load(fake, "ensemble.method=weighted")
    method = build_methods(cfg.ensemble, ctx, stack)[0]
    honest = evaluate_method(method, stack, ctx.metric).score
    naive_pred = copy.deepcopy(method).fit(stack.oof, stack.y).predict(stack.oof)
    naive = score(ctx.metric, stack.y, naive_pred, stack.folds)
    assert naive.cv_mean - honest.test > 0.05
    assert abs(honest.cv_mean - honest.test) < 0.035


def test_honest_cv_of_stacking_with_a_memorizing_meta_learner(tmp_path: Path) -> None:
    """A member whose OOF values are unique per row lets a deep tree meta-learner memorize the training
    labels (in-sample accuracy 1.0), though its test predictions are noise: nested CV stays near the test."""
    from sklearn.tree import DecisionTreeClassifier

    from pipeline.ensembling.stacking import Stacking

    fake = make_fake(tmp_path, n=400, n_test=2000, metric="accuracy")
    rng = np.random.default_rng(0)
    fake.member("honest", noisy(fake.y, "binary", 1.0, rng), noisy(fake.y_test, "binary", 1.0, rng))
    fake.member("leaky", noisy(fake.y, "binary", 0, rng), noisy(fake.y_test, "binary", 0, rng))
    _, ctx, stack = load(fake)
    method = Stacking(DecisionTreeClassifier(random_state=0))
    honest = evaluate_method(method, stack, ctx.metric).score
    naive = score(ctx.metric, stack.y, copy.deepcopy(method).fit(stack.oof, stack.y).predict(stack.oof), stack.folds)
    assert naive.cv_mean == 1.0
    assert abs(honest.cv_mean - honest.test) < 0.05 < naive.cv_mean - honest.test


def good_member(fake: Fake, name: str, rng: np.random.Generator, task: str = "binary") -> Path:
    return fake.member(name, noisy(fake.y, task, 1.0, rng), noisy(fake.y_test, task, 1.0, rng))


def _valid(fake: Fake, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return noisy(fake.y, "binary", 1.0, rng), noisy(fake.y_test, "binary", 1.0, rng)


def _broken(fake: Fake, how: str, rng: np.random.Generator) -> Path:
    """A member folder broken in one way; the match is a fragment of the reason the stage must give."""
    oof, test = _valid(fake, rng)
    if how == "proba > 1":
        oof[3, 1] = 1.7
    if how == "NaN":
        test[0, 0] = np.nan
    folder = fake.member("broken", oof, test)
    if how == "wrong ids":
        frame = pd.read_csv(folder / "oof.csv")
        frame.loc[[5, 6], "id"] = frame.loc[[6, 5], "id"].to_numpy()
        frame.to_csv(folder / "oof.csv", index=False)
    if how == "other folds":
        meta = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**meta, "folds_hash": "0ther"}))
    if how == "columns":
        pd.read_csv(folder / "test.csv").rename(columns={"yes": "oui"}).to_csv(folder / "test.csv", index=False)
    if how == "missing test.csv":
        (folder / "test.csv").unlink()
    return folder


BROKEN = {
    "proba > 1": "outside \\[0, 1\\]",
    "NaN": "NaN",
    "wrong ids": "oof.csv line 7 has id 6 where 5",
    "other folds": "trained on other folds",
    "columns": "has columns",
    "missing test.csv": "test.csv is missing",
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_invalid_member_refused_with_its_name(fake: Fake, how: str) -> None:
    rng = np.random.default_rng(0)
    good_member(fake, "good", rng)
    folder = _broken(fake, how, rng)
    with pytest.raises(UserError, match=f"model {folder} does not fit: .*{BROKEN[how]}"):
        load(fake)


@pytest.mark.parametrize("how", ["proba > 1", "other folds"])
def test_invalid_member_skipped_with_skip_invalid(fake: Fake, how: str, caplog) -> None:
    rng = np.random.default_rng(0)
    good_member(fake, "good", rng)
    _broken(fake, how, rng)
    _, _, stack = load(fake, "ensemble.skip_invalid=true")
    assert stack.names == ["good"]
    assert "skipping model" in caplog.text and "broken" in caplog.text


def test_members_on_different_folds_are_never_mixed(fake: Fake) -> None:
    rng = np.random.default_rng(0)
    good_member(fake, "current", rng)
    stale = good_member(fake, "stale", rng)
    meta = json.loads((stale / "metrics.json").read_text())
    (stale / "metrics.json").write_text(json.dumps({**meta, "folds_hash": "0ld"}))
    with pytest.raises(UserError, match="stale does not fit: it was trained on other folds"):
        load(fake)


def test_search_best_k_keeps_the_best_trials_of_each_study(fake: Fake) -> None:
    import optuna

    from pipeline.search import storage_url

    rng = np.random.default_rng(0)
    study = optuna.create_study(storage=storage_url(fake.out), study_name="head", direction="maximize")
    for name, value in (("t0", 0.7), ("t1", 0.9), ("t2", 0.8)):
        good_member(fake, name, rng)
        study.add_trial(
            optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs={"model_id": name})
        )
    good_member(fake, "lgbm", rng)  # not a trial: stays
    assert load(fake, "ensemble.search_best_k=2")[2].names == ["lgbm", "t1", "t2"]
    assert load(fake)[2].names == ["lgbm", "t0", "t1", "t2"]


def test_incomplete_and_excluded_members_are_left_out(fake: Fake) -> None:
    rng = np.random.default_rng(0)
    for name in ("cnn_s0", "cnn_s1", "bert_s0", "running"):
        good_member(fake, name, rng)
    (fake.out / "models" / "running" / "metrics.json").unlink()  # still training: metrics.json comes last
    assert load(fake)[2].names == ["bert_s0", "cnn_s0", "cnn_s1"]
    assert load(fake, "ensemble.include=[cnn*]", "ensemble.exclude=[*s1]")[2].names == ["cnn_s0"]
    assert load(fake, "ensemble.include=cnn*")[2].names == ["cnn_s0", "cnn_s1"]  # one pattern, no brackets
    with pytest.raises(UserError, match="no complete model"):
        load(fake, "ensemble.include=[gbm*]")


def test_missing_outputs_and_wrong_method_are_user_errors(fake: Fake) -> None:
    with pytest.raises(UserError, match="train some models first"):
        load(fake)
    good_member(fake, "m", np.random.default_rng(0))
    with pytest.raises(UserError, match="unknown ensemble.method 'median'"):
        cfg, ctx, stack = load(fake, "ensemble.method=median")
        build_methods(cfg.ensemble, ctx, stack)
    (fake.out / "competition.json").unlink()
    with pytest.raises(UserError, match="competition.json not found"):
        load(fake)


def test_method_that_does_not_fit_the_task(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, task="regression")
    good_member(fake, "m", np.random.default_rng(0), "regression")
    cfg, ctx, stack = load(fake, "ensemble.method=vote")
    with pytest.raises(UserError, match="vote does not fit a regression task: choose auto or one of mean, "):
        build_methods(cfg.ensemble, ctx, stack)


SAMPLES = [  # (task, metric, sample kind, what the target columns must hold)
    ("binary", "roc_auc", "proba", "proba"),
    ("binary", "accuracy", "labels", "labels"),
    ("binary", "roc_auc", "labels", "labels"),  # a sample of label strings asks for labels
    ("multiclass", "logloss", "per_class", "per_class"),
    ("multiclass", "accuracy", "labels", "labels"),
    ("regression", "rmse", "auto", "values"),
]


@pytest.mark.parametrize(("task", "metric", "kind", "holds"), SAMPLES)
def test_submission_matches_sample(tmp_path: Path, capsys, task: str, metric: str, kind: str, holds: str) -> None:
    fake = make_fake(tmp_path, task=task, n=200, n_test=100, sample=kind, metric=metric)
    good_member(fake, "m", np.random.default_rng(0), task)
    run_main(fake, capsys, "ensemble.method=mean")
    sample = pd.read_csv(fake.data / "sample_submission.csv")
    sub = pd.read_csv(fake.out / "submission.csv")
    assert list(sub.columns) == list(sample.columns)
    assert list(sub["id"]) == list(sample["id"])  # the sample's (shuffled) id order
    targets = [c for c in sample.columns if c != "id"]
    if holds == "labels":
        assert (sub.dtypes == sample.dtypes).all()
        assert set(sub["label"]) <= set(CLASSES[task])
        assert (sub["label"] == labels_of(fake.y_test, CLASSES[task])[sub["id"] - len(fake.y)]).mean() > 0.5
    else:
        assert all(pd.api.types.is_float_dtype(sub[c]) for c in targets)
    if holds == "proba":
        assert sub["label"].between(0, 1).all()
    if holds == "per_class":
        assert np.allclose(sub[targets].sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize(
    ("task", "metric", "columns"),
    [
        ("binary", "roc_auc", ["id", "label"]),
        ("binary", "accuracy", ["id", "label"]),
        ("multiclass", "logloss", ["id", "ant", "bee", "cat"]),
        ("regression", "mae", ["id", "label"]),
    ],
)
def test_submission_without_sample(tmp_path: Path, capsys, task: str, metric: str, columns: list) -> None:
    fake = make_fake(tmp_path, task=task, n=200, n_test=100, sample=None, metric=metric)
    good_member(fake, "m", np.random.default_rng(0), task)
    run_main(fake, capsys, "ensemble.method=mean")
    sub = pd.read_csv(fake.out / "submission.csv")
    assert list(sub.columns) == columns and list(sub["id"]) == list(fake.test_ids)
    if metric == "accuracy":
        assert set(sub["label"]) <= {"no", "yes"}


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_rank_is_invariant_to_monotone_transforms(tmp_path: Path, task: str) -> None:
    fake = make_fake(tmp_path, task=task, n=300, n_test=10)
    rng = np.random.default_rng(0)
    P = np.stack([noisy(fake.y, task, 1.0, rng) for _ in range(3)]).astype(np.float32)
    warped = P.copy()
    if task == "binary":  # a probability stays a probability: squash P(yes), P(no) follows
        warped[1, :, 1] = P[1, :, 1] ** 3
        warped[1, :, 0] = 1 - warped[1, :, 1]
    else:
        warped[1] = P[1] ** 3 / 2
    assert not np.allclose(Mean().predict(P), Mean().predict(warped))
    np.testing.assert_allclose(Rank().predict(P), Rank().predict(warped), atol=1e-6)
    np.testing.assert_array_equal(Rank(n_jobs=2).predict(P), Rank().predict(P))  # threads: the same sums
    assert Rank().predict(P).min() >= 0 and Rank().predict(P).max() <= 1


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_fitted_rank_predicts_a_row_the_same_whatever_rows_come_with_it(tmp_path: Path, task: str) -> None:
    """Fitted on OOF rows, rank ranks new rows against them: half of the test rows get the same predictions as
    when they come with the other half (unfitted, ranks among the given rows change with them)."""
    fake = make_fake(tmp_path, task=task, n=300, n_test=10)
    rng = np.random.default_rng(0)
    P = np.stack([noisy(fake.y, task, 1.0, rng) for _ in range(3)]).astype(np.float32)
    oof, test = P[:, :200], P[:, 200:]
    half = rng.permutation(100)[:50]
    fitted = Rank().fit(oof, fake.y[:200])
    np.testing.assert_allclose(fitted.predict(test)[half], fitted.predict(test[:, half]), atol=1e-6)
    assert not np.allclose(Rank().predict(test)[half], Rank().predict(test[:, half]), atol=1e-3)
    # against a large reference, the quantiles are the rows' own ranks: the method scored out of fold is kept
    np.testing.assert_allclose(fitted.predict(oof), Rank().predict(oof), atol=0.01)


def test_average_ranks_equal_scipy_with_ties() -> None:
    from scipy.stats import rankdata

    from pipeline.ensembling.methods import average_ranks

    x = np.round(np.random.default_rng(0).random((4, 300)) * 20) / 20  # 21 distinct values: many ties
    np.testing.assert_array_equal(average_ranks(x), rankdata(x, axis=1))


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "logloss", "f1_macro"])
def test_caruana_weights_are_a_distribution_favoring_the_good_member(metric: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    P = np.stack([noisy(y, "binary", s, rng) for s in (3.0, 0.5, 0.0, 0.0)]).astype(np.float32)
    method = Weighted(get_metric(metric, "binary"), iterations=30, patience=30).fit(P, y)
    assert (method.weights_ >= 0).all() and np.isclose(method.weights_.sum(), 1)
    assert method.weights_.argmax() == 0 and len(method.trajectory_) == 30
    pred = method.predict(P)
    assert pred.shape == (500, 2) and np.allclose(pred.sum(axis=1), 1, atol=1e-5)


def test_scipy_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    P = np.stack([noisy(y, "multiclass", s, rng) for s in (2.0, 1.0, 0.0)]).astype(np.float32)
    w = Weighted(get_metric("logloss", "multiclass"), optimizer="scipy").fit(P, y).weights_
    assert (w >= 0).all() and np.isclose(w.sum(), 1) and w[0] > w[2]
    with pytest.raises(UserError, match="unknown ensemble.weighted.optimizer 'adam'"):
        Weighted(get_metric("logloss", "multiclass"), optimizer="adam")


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        ("binary", "roc_auc"),
        ("binary", "accuracy"),
        ("multiclass", "accuracy"),
        ("multiclass", "logloss"),
        ("regression", "rmse"),
        ("regression", "mae"),
        ("regression", "r2"),
    ],
)
def test_vectorized_scores_equal_the_metric(task: str, metric: str) -> None:
    """Caruana's batch scorers score every candidate (total + member) / step exactly like the registry."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=300) if task == "regression" else rng.integers(0, 2 if task == "binary" else 3, 300)
    P = np.stack([noisy(y, task, s, rng) for s in (1.0, 0.3, 0.0)]).astype(np.float32)
    P = P[:, :, None] if task == "regression" else P
    m, total, step = get_metric(metric, task), P[0] + P[1], 3
    expected = [m(y, ((total + p) / step).squeeze()) for p in P]
    np.testing.assert_allclose(batch_scorer(m, P, y)(total, step), expected, rtol=1e-5)


@pytest.mark.parametrize("classes", [2, 4])
def test_vectorized_accuracy_breaks_ties_like_argmax(classes: int) -> None:
    """Members that vote (one-hot) or sit on 1/2 tie classes often: the first tied class wins, as in argmax."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, classes, 400)
    P = np.stack([np.eye(classes)[rng.integers(0, classes, 400)] for _ in range(3)]).astype(np.float32)
    P[2] = 1 / classes  # a member that knows nothing: ties in every class
    m, total, step = get_metric("accuracy", "multiclass"), P[0] + P[1], 3
    expected = [m(y, (total + p) / step) for p in P]
    assert batch_scorer(m, P, y)(total, step).tolist() == expected


def test_holdout_rows_without_oof_are_left_out(tmp_path: Path, capsys) -> None:
    """Holdout folds: the 80 % of rows that only train carry fold -1 and NaN predictions; methods are
    scored over inner splits of the 20 % validated rows."""
    n = 500
    folds = np.where(np.arange(n) % 5 == 0, 0, -1)
    fake = make_fake(tmp_path, n=n, folds=folds)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        oof, test = _valid(fake, rng)
        oof[folds == -1] = np.nan
        fake.member(name, oof, test)
    _, _, stack = load(fake)
    assert stack.oof.shape == (2, 100, 2) and len(np.unique(stack.folds)) == 5
    run_main(fake, capsys)
    assert pd.read_csv(fake.out / "leaderboard.csv")["cv_std"].gt(0).all()


def test_stacking_passthrough_uses_the_tabular_features(fake: Fake) -> None:
    """Members that know nothing; feature `x` (= target + noise) carries the signal: passthrough uses it."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        fake.member(name, noisy(fake.y, "binary", 0, rng), noisy(fake.y_test, "binary", 0, rng))
    scores = {}
    for passthrough in (False, True):
        cfg, ctx, stack = load(fake, "ensemble.method=stacking", f"ensemble.stacking.passthrough={passthrough}")
        entry = evaluate_method(build_methods(cfg.ensemble, ctx, stack)[0], stack, ctx.metric)
        scores[passthrough] = entry.score
    assert scores[True].cv_mean > scores[False].cv_mean + 0.2 and scores[True].test > 0.7
    coef = entry.method.describe(stack.names)["coef"]
    assert coef["inputs"][:3] == ["a", "b", "num__x"] and len(coef["inputs"]) == len(coef["values"][0])


def test_stacking_passthrough_reads_test_categories_as_training_did(fake: Fake) -> None:
    """A category column ('red', 'blue' in training) whose test values all look numeric stays text: '0', not 0."""
    test = pd.read_csv(fake.data / "test.csv")
    test["c"] = (test["id"] % 2).astype(str)
    test.to_csv(fake.data / "test.csv", index=False)
    rng = np.random.default_rng(0)
    fake.member("a", noisy(fake.y, "binary", 0, rng), noisy(fake.y_test, "binary", 0, rng))
    _, ctx, stack = load(fake, "ensemble.method=stacking", "ensemble.stacking.passthrough=true")
    assert add_features(stack, ctx) == (["x"], ["c"])
    assert stack.X_test["c"].tolist() == (stack.test_ids % 2).astype(str).tolist()


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "ensemble").glob("*/*.yaml")), ids=lambda p: p.stem)
def test_every_meta_learner_config_builds(tmp_path: Path, path: Path) -> None:
    from pipeline.ensembling.stacking import Stacking, meta_learner

    group = path.parent.name
    task = "regression" if group == "regressor" else "multiclass"
    fake = make_fake(tmp_path, task=task, n=300, n_test=50)
    good_member(fake, "m", np.random.default_rng(0), task)
    cfg, ctx, stack = load(fake, f"ensemble/{group}={path.stem}")
    if "max_iter" in cfg.ensemble.stacking[group]:  # a few boosting rounds are enough to check it runs
        cfg.ensemble.stacking[group].max_iter = 20
    pred = Stacking(meta_learner(cfg.ensemble.stacking, task)).fit(stack.oof, stack.y).predict(stack.test)
    assert pred.shape == (50, 1 if task == "regression" else 3) and np.isfinite(pred).all()


def test_meta_learner_that_does_not_fit_the_task(fake: Fake) -> None:
    good_member(fake, "m", np.random.default_rng(0))
    cfg, ctx, stack = load(
        fake,
        "ensemble.method=stacking",
        "ensemble.stacking.classifier._target_=sklearn.linear_model.Ridge",
        "~ensemble.stacking.classifier.C",
        "~ensemble.stacking.classifier.max_iter",
    )
    with pytest.raises(UserError, match="ensemble.stacking.classifier must be a classifier with predict_proba"):
        build_methods(cfg.ensemble, ctx, stack)
    cfg, ctx, stack = load(fake, "ensemble.method=stacking", "ensemble.stacking.classifier._target_=sklearn.nope.Model")
    with pytest.raises(UserError, match="ensemble.stacking.classifier could not be built"):
        build_methods(cfg.ensemble, ctx, stack)


def _cli(fake: Fake, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.ensemble", *fake.overrides(*extra)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_entry_point_end_to_end(fake: Fake) -> None:
    two_complementary(fake)
    run = _cli(fake)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == f"submission: {fake.out / 'submission.csv'}"
    for file in ("leaderboard.csv", "weights.json", "correlation.png", "provenance.json", "submission.csv"):
        assert (fake.out / file).is_file()
    prov = json.loads((fake.out / "provenance.json").read_text())
    assert prov["command"].startswith("python -m pipeline.ensemble data=csv")


@pytest.mark.slow
def test_entry_point_bad_input_exits_2_with_one_line(fake: Fake) -> None:
    rng = np.random.default_rng(0)
    good_member(fake, "good", rng)
    _broken(fake, "proba > 1", rng)
    run = _cli(fake)
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: model ") and "outside [0, 1]" in errors[0]
    assert "Traceback" not in run.stderr + run.stdout
    assert not (fake.out / "submission.csv").exists() and not (fake.out / "leaderboard.csv").exists()
