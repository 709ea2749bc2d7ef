"""Shared folds: one fold per row, what each scheme guarantees, reuse of folds.csv, refusal when stale."""

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import Comp

from pipeline.advisor.rules import check
from pipeline.data.folds import HOLDOUT_TRAIN_ONLY
from pipeline.errors import UserError
from pipeline.prepare import prepare


def _folds_csv(out_dir: Path) -> pd.DataFrame:
    return pd.read_csv(out_dir / "folds.csv")


def test_every_row_gets_one_fold(make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path) -> None:
    comp = make_comp(n_train=50)
    prep = prepare(make_cfg(comp))
    written = _folds_csv(out_dir)
    assert list(written.columns) == ["id", "fold"]
    assert written["id"].tolist() == comp.train["id"].tolist()
    assert written["fold"].tolist() == prep.folds.tolist()
    assert sorted(np.bincount(prep.folds).tolist()) == [10] * 5
    meta = json.loads((out_dir / "folds.json").read_text())
    assert meta["cv"] == {"scheme": "stratified", "n_folds": 5, "seed": 42}
    assert meta["n_rows"] == 50 and meta["data_hash"] == prep.comp.data_hash


def test_stratified_keeps_class_ratios(make_comp: Callable[..., Comp], make_cfg: Callable) -> None:
    comp = make_comp(n_train=60, labels=("a", "a", "a", "b", "b", "c"))  # 30 / 20 / 10 rows
    prep = prepare(make_cfg(comp, "cv.n_folds=5"))
    per_fold = pd.crosstab(prep.folds, comp.train["y"])
    assert (per_fold == pd.Series({"a": 6, "b": 4, "c": 2})).all().all()


def test_group_scheme_keeps_groups_in_one_fold(
    make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path
) -> None:
    comp = make_comp(n_train=60)
    comp.train["site"] = [f"s{i % 12}" for i in range(60)]
    comp.write()
    prep = prepare(make_cfg(comp, "data.group_col=site", "cv.n_folds=4"))  # scheme auto -> group
    assert json.loads((out_dir / "folds.json").read_text())["cv"]["scheme"] == "group"
    folds_per_group = pd.Series(prep.folds).groupby(comp.train["site"]).nunique()
    assert (folds_per_group == 1).all()
    assert sorted(set(prep.folds)) == [0, 1, 2, 3]
    assert "site" not in prep.comp.feature_cols


@pytest.mark.parametrize(("fraction", "warns"), [(0.25, False), (0.2, False), (0.3, False), (0.1, True), (0.5, True)])
def test_holdout(
    make_comp: Callable[..., Comp],
    make_cfg: Callable,
    fraction: float,
    warns: bool,
) -> None:
    comp = make_comp(n_train=40)
    cfg = make_cfg(comp, "cv.scheme=holdout", f"cv.val_fraction={fraction}")
    prep = prepare(cfg)
    assert set(prep.folds) == {0, HOLDOUT_TRAIN_ONLY}
    assert (prep.folds == 0).sum() == round(fraction * 40)
    assert ("holdout_fraction" in {f.rule for f in check(cfg)}) is warns  # the advisor's rule, defined once


def _timed(make_comp: Callable[..., Comp], times: list) -> Comp:
    comp = make_comp(n_train=len(times))
    comp.train["when"] = times
    comp.test["when"] = times[-1]  # later than every training row, as a test file's rows are
    comp.write()
    return comp


@pytest.mark.parametrize(
    "times",
    [
        [f"2024-{1 + i % 12:02d}-{1 + i // 12:02d}" for i in range(60)],  # ISO dates, shuffled months
        [float(i % 7) for i in range(60)],  # numbers with ties: tied rows never train a fold that validates a later one
    ],
    ids=["dates", "numbers with ties"],
)
def test_time_folds_never_train_on_later_rows(
    make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path, times: list
) -> None:
    from pipeline.data.folds import time_values
    from pipeline.training.job import fold_rows

    comp = _timed(make_comp, times)
    prep = prepare(make_cfg(comp, "cv.scheme=time", "data.time_col=when", "cv.n_folds=4"))
    t = time_values(prep.comp).to_numpy()
    assert json.loads((out_dir / "folds.json").read_text())["cv"] == {
        "scheme": "time",
        "n_folds": 4,
        "time_col": "when",
    }
    assert (prep.folds == HOLDOUT_TRAIN_ONLY).sum() == 12 and sorted(set(prep.folds)) == [-1, 0, 1, 2, 3]
    rows = fold_rows(prep.folds, prep.folds_meta)
    for k, r in rows:
        assert t[r["train"]].max() <= t[r["val"]].min(), f"fold {k} trains on later rows"
        assert set(prep.folds[r["train"]]) == set(range(-1, k))  # an expanding window: every earlier block
    assert [len(r["train"]) for _, r in rows] == [12, 24, 36, 48]
    assert "when" in prep.comp.feature_cols  # it stays a feature (its date parts, or the number)


@pytest.mark.slow
def test_time_folds_leave_the_first_block_out_of_every_score(
    make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path
) -> None:
    """Rows that only train have no OOF prediction; the member's CV and the ensemble read the validated rows only."""
    from conftest import build_cfg

    from pipeline import ensemble
    from pipeline.training.job import train_job

    comp = _timed(make_comp, [f"2024-01-{1 + i % 28:02d}" for i in range(60)])
    time = ["cv.scheme=time", "data.time_col=when", "cv.n_folds=3"]
    fast = ["model.head.estimator.n_estimators=20", "model.head.estimator.min_child_samples=3"]
    for seed in (0, 1):
        cfg = make_cfg(comp, *time, "model=tabular_lgbm", *fast, f"seed={seed}")
        metrics = train_job(cfg, prep := prepare(cfg))
    oof = pd.read_csv(out_dir / "models" / metrics["model_id"] / "oof.csv")
    first = prep.folds == HOLDOUT_TRAIN_ONLY
    assert first.sum() == 15 and oof.loc[first, ["no", "yes"]].isna().all().all()
    assert oof.loc[~first, ["no", "yes"]].notna().all().all()
    assert metrics["cv_score"] == prep.comp.metric(prep.comp.y[~first], oof.loc[~first, ["no", "yes"]].to_numpy())
    data = ["data=csv", f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out_dir}"]
    ensemble.main(build_cfg(*data, "data.time_col=when", "ensemble.method=mean", entry="ensemble"))
    assert len(pd.read_csv(out_dir / "submission.csv")) == len(comp.test)


@pytest.mark.parametrize(
    ("times", "args", "match"),
    [
        ([1.0] * 20, ["cv.scheme=time"], "cv.scheme=time needs data.time_col="),
        (["2024-01-01"] * 19 + [None], ["cv.scheme=time", "data.time_col=when"], "line 21: time column 'when'"),
        (["red", "blue"] * 10, ["cv.scheme=time", "data.time_col=when"], "holds neither numbers nor dates"),
        ([1.0] * 20, ["cv.scheme=time", "data.time_col=nope"], "has no time column 'nope'"),
    ],
    ids=["no time_col", "a missing time", "not times", "no such column"],
)
def test_time_folds_refuse_bad_input(
    make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path, times: list, args: list, match: str
) -> None:
    comp = _timed(make_comp, times)
    with pytest.raises(UserError, match=match):
        prepare(make_cfg(comp, *args))
    assert not (out_dir / "folds.csv").exists()


def test_regression_defaults_to_kfold(make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path) -> None:
    comp = make_comp(n_train=30, labels=tuple(np.linspace(0.0, 10.0, 30)))
    prep = prepare(make_cfg(comp, "cv.n_folds=3"))
    assert prep.comp.task == "regression"
    assert json.loads((out_dir / "folds.json").read_text())["cv"] == {
        "scheme": "kfold",
        "n_folds": 3,
        "seed": 42,
    }
    assert np.bincount(prep.folds).tolist() == [10, 10, 10]


def test_same_settings_give_same_folds(make_comp: Callable[..., Comp], make_cfg: Callable, tmp_path: Path) -> None:
    comp = make_comp()
    first = prepare(make_cfg(comp)).folds
    second = prepare(make_cfg(comp, f"paths.output_dir={tmp_path / 'elsewhere'}")).folds
    other_seed = prepare(make_cfg(comp, f"paths.output_dir={tmp_path / 'seed'}", "cv.seed=7")).folds
    assert first.tolist() == second.tolist()
    assert first.tolist() != other_seed.tolist()


def _age(path: Path) -> int:
    """Backdate `path` by an hour, so a rewrite shows in its mtime; return the backdated mtime (ns)."""
    old = path.stat().st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(old, old))
    return old


def test_second_run_reuses_folds(make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path) -> None:
    comp = make_comp()
    first = prepare(make_cfg(comp))
    csv, meta = out_dir / "folds.csv", out_dir / "folds.json"
    content, stamps = csv.read_bytes(), (_age(csv), _age(meta))
    second = prepare(make_cfg(comp))
    assert second.folds.tolist() == first.folds.tolist()
    assert second.folds_meta == first.folds_meta
    assert csv.read_bytes() == content
    assert (csv.stat().st_mtime_ns, meta.stat().st_mtime_ns) == stamps


def _change_one_value(comp: Comp) -> None:
    comp.train.loc[0, "num"] += 1.0
    comp.write()


@pytest.mark.parametrize(
    ("edit", "overrides", "why"),
    [
        (_change_one_value, [], r"the training file changed \(hash \w+ -> \w+\)"),
        (None, ["cv.n_folds=4"], r"the CV settings changed \(n_folds 5 -> 4\)"),
        (None, ["cv.seed=1"], r"the CV settings changed \(seed 42 -> 1\)"),
        (None, ["cv.scheme=kfold"], r"the CV settings changed \(scheme stratified -> kfold\)"),
        (
            None,
            ["cv.scheme=holdout"],
            r"the CV settings changed \(scheme stratified -> holdout, val_fraction None -> 0.2\)",
        ),
    ],
    ids=["training file", "n_folds", "seed", "scheme", "holdout"],
)
def test_stale_folds_refused(
    make_comp: Callable[..., Comp],
    make_cfg: Callable,
    out_dir: Path,
    edit: Callable[[Comp], None] | None,
    overrides: list[str],
    why: str,
) -> None:
    comp = make_comp()
    prepare(make_cfg(comp))
    before = {name: (out_dir / name).read_bytes() for name in ("folds.csv", "folds.json")}
    if edit:
        edit(comp)
    with pytest.raises(
        UserError, match=rf"folds.csv was built for other data: {why}\. Rebuild it with cv.rebuild=true"
    ):
        prepare(make_cfg(comp, *overrides))
    assert {name: (out_dir / name).read_bytes() for name in before} == before


def test_rebuild(make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path) -> None:
    comp = make_comp()
    prepare(make_cfg(comp))
    _change_one_value(comp)
    rebuilt = prepare(make_cfg(comp, "cv.n_folds=4", "cv.rebuild=true"))
    assert sorted(set(rebuilt.folds)) == [0, 1, 2, 3]
    meta = json.loads((out_dir / "folds.json").read_text())
    assert meta["cv"]["n_folds"] == 4 and meta["data_hash"] == rebuilt.comp.data_hash
    assert _folds_csv(out_dir)["fold"].tolist() == rebuilt.folds.tolist()
    # the rebuilt folds are the reference from now on: reused without cv.rebuild
    assert prepare(make_cfg(comp, "cv.n_folds=4")).folds.tolist() == rebuilt.folds.tolist()
