"""The competition data contract: task inference, label round trip, and one clear error per bad input."""

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import Comp

from pipeline.artifacts import CompetitionInfo
from pipeline.data.contract import MAX_INT_CLASSES, encode_target, infer_task, load_competition
from pipeline.errors import UserError
from pipeline.prepare import prepare

OUTPUTS = ("folds.csv", "folds.json", "competition.json")


@pytest.mark.parametrize(
    ("values", "task", "rule"),
    [
        (["no", "yes"] * 5, "binary", "non-numeric target, 2 classes"),
        (["cat", "dog", "bird"] * 4, "multiclass", "non-numeric target, 3 classes"),
        ([True, False] * 5, "binary", "non-numeric target, 2 classes"),
        ([0, 1] * 5, "binary", "integer target with 2 <= 20 distinct values"),
        ([3, 7, 10] * 4, "multiclass", "integer target with 3 <= 20 distinct values"),
        (list(range(MAX_INT_CLASSES)) * 2, "multiclass", "integer target with 20 <= 20"),
        (list(range(MAX_INT_CLASSES + 1)), "regression", "numeric target with 21 distinct values"),
        (list(range(100)), "regression", "numeric target with 100 distinct values"),
        ([0.5, 1.25, 2.0, 3.75] * 3, "regression", "numeric target with 4 distinct values (dtype float64)"),
        ([0.0, 1.0] * 5, "regression", "dtype float64"),  # floats are values, even when they look like 0/1
    ],
)
def test_infer_task(values: list, task: str, rule: str) -> None:
    inferred, why = infer_task(pd.Series(values), "auto")
    assert inferred == task
    assert rule in why


@pytest.mark.parametrize(
    ("values", "given"),
    [([0, 1, 2] * 4, "regression"), ([0.5, 1.5, 2.5] * 4, "multiclass"), (list(range(50)), "multiclass")],
)
def test_explicit_task_overrides_inference(values: list, given: str) -> None:
    assert infer_task(pd.Series(values), given) == (given, f"data.task={given} (given)")


def test_unknown_task_rejected() -> None:
    with pytest.raises(UserError, match=r"unknown data.task 'ordinal': choose one of auto, binary, multiclass"):
        infer_task(pd.Series([0, 1]), "ordinal")


@pytest.mark.parametrize(
    ("labels", "classes"),
    [
        (["yes", "no", "no", "yes", "no"], ["no", "yes"]),
        ([10, 3, 7, 7, 3, 10], [3, 7, 10]),
        ([True, False, True], [False, True]),
        (["b", "c", "a", "c"], ["a", "b", "c"]),
    ],
)
def test_label_round_trip(labels: list, classes: list) -> None:
    y = pd.Series(labels)
    task = "binary" if len(classes) == 2 else "multiclass"
    encoded, got = encode_target(y, task, Path("train.csv"), "y")
    assert got == classes
    assert encoded.dtype.kind == "i" and set(encoded) == set(range(len(classes)))
    assert [got[i] for i in encoded] == labels


@pytest.mark.parametrize(
    ("labels", "positive", "classes"),
    [(["yes", "no", "yes"], "no", ["yes", "no"]), ([3, 7, 7], 3, [7, 3]), ([3, 7, 7], "3", [7, 3])],
)
def test_positive_class_is_last(labels: list, positive: object, classes: list) -> None:
    encoded, got = encode_target(pd.Series(labels), "binary", Path("train.csv"), "y", positive)
    assert got == classes
    assert [got[i] for i in encoded] == labels


def test_regression_target_parsed_as_float() -> None:
    encoded, classes = encode_target(pd.Series([1, 2, 5]), "regression", Path("train.csv"), "y")
    assert classes is None
    assert encoded.dtype == float and encoded.tolist() == [1.0, 2.0, 5.0]


@pytest.mark.parametrize(
    ("labels", "task", "positive", "match"),
    [
        (
            ["a", "b", "c"],
            "binary",
            None,
            r"data.task=binary but target 'y' has 3 classes; use data.task=multiclass",
        ),
        (["a", "b"], "binary", "c", r"data.positive_class='c' is not one of the binary classes \['a', 'b'\]"),
        (["a", "b", "c"], "multiclass", "a", r"data.positive_class='a' is not one of the binary classes"),
    ],
)
def test_label_errors(labels: list, task: str, positive: object, match: str) -> None:
    with pytest.raises(UserError, match=match):
        encode_target(pd.Series(labels), task, Path("train.csv"), "y", positive)


def test_mapping_saved_and_rule_logged(
    make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    comp = make_comp(n_train=30, labels=(10, 3, 7), images=True, text=True)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        prep = prepare(make_cfg(comp))
    assert "task: multiclass (integer target with 3 <= 20 distinct values, 3 classes)" in caplog.text
    info = json.loads((out_dir / "competition.json").read_text())
    assert info["classes"] == [3, 7, 10] and info["task"] == "multiclass" and info["metric"] == "accuracy"
    assert [info["classes"][i] for i in prep.comp.y] == comp.train["y"].tolist()
    # every column with another role is left out of the tabular features
    assert prep.comp.feature_cols == ["num", "cat"]
    assert (info["image_col"], info["text_col"]) == ("image", "text")


COMPETITION_KEYS = [  # competition.json's keys in their order: users' scripts and notebooks read this file
    *("task", "metric", "classes", "id_col", "target", "train_csv", "test_csv", "n_train", "n_test", "data_hash"),
    *("folds_hash", "sample_submission", "feature_cols", "numeric_cols", "image_col", "text_col"),
    *("datetime_cols", "text_sources", "label_sep"),
]


def test_competition_record_round_trips_the_prepared_file_byte_for_byte(
    make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path, tmp_path: Path
) -> None:
    prepare(make_cfg(make_comp(n_train=30, labels=(10, 3, 7), images=True, text=True)))
    written = (out_dir / "competition.json").read_bytes()
    assert list(json.loads(written)) == COMPETITION_KEYS
    info = CompetitionInfo.read(out_dir)
    assert info.classes == [3, 7, 10] and info.numeric_cols == ["num"]
    assert info.write(tmp_path / "again.json").read_bytes() == written


def test_competition_record_reads_older_outputs_with_their_defaults(tmp_path: Path) -> None:
    newer = ("test_csv", "numeric_cols", "sample_submission", "datetime_cols", "text_sources")
    older = {k: "x" for k in COMPETITION_KEYS if k not in newer}
    (tmp_path / "competition.json").write_text(json.dumps(older | {"feature_cols": ["a"]}))
    info = CompetitionInfo.read(tmp_path)
    assert (info.test_csv, info.numeric_cols, info.sample_submission, info.feature_cols) == (None, None, None, ["a"])
    (tmp_path / "competition.json").write_text(json.dumps({"task": "binary"}))
    with pytest.raises(UserError, match=r"competition\.json lacks a key .*rerun `make train`"):
        CompetitionInfo.read(tmp_path)


def test_positive_class_override(make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path) -> None:
    comp = make_comp()
    prep = prepare(make_cfg(comp, "data.positive_class=no"))
    assert json.loads((out_dir / "competition.json").read_text())["classes"] == ["yes", "no"]
    assert (prep.comp.y == (comp.train["y"] == "no")).all()


def _frames(
    train: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    test: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> Callable[[Comp], None]:
    """An edit that replaces the tables by `train(c.train)` / `test(c.test)` and rewrites the CSVs."""

    def edit(c: Comp) -> None:
        c.train = train(c.train) if train else c.train
        c.test = test(c.test) if test else c.test
        c.write()

    return edit


def _cell(col: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def put(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({col: object})
        df.loc[row, col] = value
        return df

    return put


def _case(
    name: str, match: str, *overrides: str, edit: Callable | None = None, kind: str = "plain", bug: str = ""
) -> object:
    """One bad input: an `edit` of the written competition and/or config `overrides`, and the message's regex.

    `kind` picks the competition (plain, images, text, regression); `bug` marks a known pipeline bug (xfail).
    """
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(kind, edit, list(overrides), match, id=name, marks=marks)


FLOATS = (1.5, 2.25, 3.0, 4.75)
BAD_INPUTS = [
    _case(
        "missing train file",
        r"train_csv file not found: /no/such/train.csv \(set data.train_csv=<path",
        "data.train_csv=/no/such/train.csv",
    ),
    _case(
        "missing test file",
        r"test_csv file not found: .*comp/test.csv \(set data.test_csv=",
        edit=lambda c: c.test_csv.unlink(),
    ),
    _case(
        "missing sample submission",
        r"data.sample_submission file not found: /no/sample.csv",
        "data.sample_submission=/no/sample.csv",
    ),
    _case(
        "missing target column",
        r"train.csv has no target column 'label'; set data.target=<column>",
        "data.target=label",
    ),
    _case(
        "missing id column in train",
        r"train.csv has no id column 'key' \(columns: id, num, cat, y\); set data",
        "data.id_col=key",
    ),
    _case(
        "missing id column in test",
        r"test.csv has no id column 'id' \(columns: key, num, cat\)",
        edit=_frames(test=lambda d: d.rename(columns={"id": "key"})),
    ),
    _case(
        "duplicated train id",
        r"train.csv line 7: duplicated id 4 in column 'id'; ids must be unique",
        edit=_frames(train=_cell("id", 5, 4)),
    ),
    _case(
        "duplicated test id",
        r"test.csv line 4: duplicated id 40 in column 'id'",
        edit=_frames(test=_cell("id", 2, 40)),
    ),
    _case(
        "duplicated string id",
        r"train.csv line 3: duplicated id 'a' in column 'id'",
        edit=_frames(train=lambda d: d.assign(id=["a", "a", *map(str, range(38))])),
    ),
    _case("empty id", r"train.csv line 5: empty id in column 'id'", edit=_frames(train=_cell("id", 3, np.nan))),
    _case(
        "missing target value",
        r"train.csv line 5: missing value in target 'y' \(1 rows\); drop or fill",
        edit=_frames(train=_cell("y", 3, np.nan)),
    ),
    _case(
        "feature not in test",
        r"column 'num' is in train.csv but not in .*test.csv: add it to the test file",
        edit=_frames(test=lambda d: d.drop(columns="num")),
    ),
    _case(
        "feature_cols names a missing column",
        r"data.feature_cols names 'size', which is not a column of",
        "data.feature_cols=[num,size]",
    ),
    _case(
        "single class",
        r"train.csv: target 'y' has a single class 'yes'; a classifier needs at least two",
        edit=_frames(train=lambda d: d.assign(y="yes")),
    ),
    _case("unknown task", r"unknown data.task 'ordinal': choose one of auto", "data.task=ordinal"),
    _case(
        "unknown metric",
        r"unknown data.metric 'auc': choose one of accuracy, .*roc_auc, rmse",
        "data.metric=auc",
    ),
    _case(
        "unknown cv.scheme",
        r"unknown cv.scheme 'loo': choose one of auto, stratified, kfold, group, holdout",
        "cv.scheme=loo",
    ),
    _case(
        "metric does not fit task",
        r"data.metric 'rmse' does not fit a binary task: choose one of accuracy, ",
        "data.metric=rmse",
    ),
    _case(
        "classification metric on regression",
        r"data.metric 'logloss' does not fit a regression task: "
        r"choose one of rmse, mae, r2, rmsle$",
        "data.metric=logloss",
        kind="regression",
    ),
    _case(
        "image path missing",
        r"train.csv line 5: image '3.png' not found under .*images \(set data.image_dir",
        edit=lambda c: (c.images / "3.png").unlink(),
        kind="images",
    ),
    _case(
        "image column missing",
        r"train.csv has no image column 'picture'; set data.image_col=<column> or",
        "data.image_col=picture",
        kind="images",
    ),
    _case(
        "image_dir not a folder",
        r"data.image_dir=/no/such/images is not a folder",
        "data.image_dir=/no/such/images",
        kind="images",
    ),
    _case(
        "unreadable image",
        r"train.csv line 5: .*images/3.png is not a readable image",
        edit=lambda c: (c.images / "3.png").write_bytes(b"not a PNG \x00\x01" * 10),
        kind="images",
    ),
    _case(
        "unreadable test image",
        r"test.csv line 2: .*images/40.png is not a readable image",
        edit=lambda c: (c.images / "40.png").write_bytes(b""),
        kind="images",
    ),
    _case(
        "empty text",
        r"train.csv line 4: text column 'text' holds nan; every row needs a non-empty string",
        edit=_frames(train=_cell("text", 2, "")),
        kind="text",
    ),
    _case(
        "blank text",
        r"test.csv line 3: text column 'text' holds '   '",
        edit=_frames(test=_cell("text", 1, "   ")),
        kind="text",
    ),
    _case(
        "numeric text",
        r"train.csv line 2: text column 'text' holds 0; every row needs a non-empty string",
        edit=_frames(train=lambda d: d.assign(text=d["id"] * 2)),
        kind="text",
    ),
    _case(
        "strings in regression target",
        r"train.csv line 8: target 'y' holds 'ten', not a number; a regression "
        "target must be numeric",
        "data.task=regression",
        edit=_frames(train=_cell("y", 6, "ten")),
        kind="regression",
    ),
    _case(
        "n_folds larger than smallest class",
        r"cv.n_folds=5 is larger than the smallest class \('rare': 3 rows\)"
        "; use cv.n_folds=3 or fewer",
        edit=_frames(train=lambda d: d.assign(y=["rare"] * 3 + d["y"].tolist()[3:])),
    ),
    _case(
        "stratified on regression",
        r"cv.scheme=stratified needs a classification target: use cv.scheme=kfold",
        "cv.scheme=stratified",
        kind="regression",
    ),
    _case(
        "n_folds larger than rows",
        r"cv.n_folds=41 must be between 2 and the number of training rows \(40\)",
        "cv.scheme=kfold",
        "cv.n_folds=41",
    ),
    _case("n_folds below 2", r"cv.n_folds=1 must be between 2", "cv.n_folds=1"),
    _case(
        "n_folds not a number",
        r"cv.n_folds",
        "cv.n_folds=five",
    ),
    _case(
        "val_fraction out of range",
        r"cv.val_fraction=1.5 must be between 0 and 1",
        "cv.scheme=holdout",
        "cv.val_fraction=1.5",
    ),
    _case(
        "holdout with a one-row class",
        r"'rare'",
        "cv.scheme=holdout",
        edit=_frames(train=lambda d: d.assign(y=["rare", *d["y"].tolist()[1:]])),
    ),
    _case(
        "holdout with fewer validation rows than classes",
        r"cv.val_fraction",
        "cv.scheme=holdout",
        "cv.val_fraction=0.05",
        edit=_frames(train=lambda d: d.assign(y=["a", "b", "c", "d"] * 10)),
    ),
    _case(
        "group scheme without group_col",
        r"cv.scheme=group needs data.group_col=<column with the group of",
        "cv.scheme=group",
    ),
    _case(
        "group_col names a missing column",
        r"train.csv has no group column 'site'; set data.group_col=<column>",
        "data.group_col=site",
    ),
    _case("fewer groups than folds", r"cv.n_folds=5 is larger than the 3 groups in 'cat'", "data.group_col=cat"),
    _case(
        "missing group value",
        r"line 2.*'g'",
        "data.group_col=g",
        edit=_frames(train=lambda d: d.assign(g=[np.nan, *(f"g{i % 8}" for i in range(39))])),
    ),
    _case(
        "empty train CSV",
        r"train.csv is empty: it needs a header line and at least one row",
        edit=lambda c: c.train_csv.write_bytes(b""),
    ),
    _case("empty test CSV", r"test.csv is empty", edit=lambda c: c.test_csv.write_bytes(b"")),
    _case(
        "header-only train CSV",
        r"train.csv has a header but no rows",
        edit=lambda c: c.train_csv.write_text("id,num,cat,y\n"),
    ),
    _case(
        "header-only test CSV",
        r"test.csv has a header but no rows",
        edit=lambda c: c.test_csv.write_text("id,num,cat\n"),
    ),
]


def _make(make_comp: Callable[..., Comp], kind: str, name: str = "comp") -> Comp:
    labels = FLOATS if kind == "regression" else ("no", "yes")
    return make_comp(labels=labels, images=kind == "images", text=kind == "text", name=name)


@pytest.mark.parametrize(("kind", "edit", "overrides", "match"), BAD_INPUTS)
def test_bad_input_is_one_clear_line(
    make_comp: Callable[..., Comp],
    make_cfg: Callable,
    out_dir: Path,
    kind: str,
    edit: Callable[[Comp], None] | None,
    overrides: list[str],
    match: str,
) -> None:
    comp = _make(make_comp, kind)
    if edit:
        edit(comp)
    with pytest.raises(UserError, match=match) as error:
        prepare(make_cfg(comp, *overrides))
    assert "\n" not in str(error.value)
    assert not [p.name for p in out_dir.glob("*") if p.name in OUTPUTS]


def test_one_row_class_advice_is_actionable(make_comp: Callable[..., Comp], make_cfg: Callable) -> None:
    comp = make_comp()
    _frames(train=lambda d: d.assign(y=["rare", *d["y"].tolist()[1:]]))(comp)
    with pytest.raises(UserError, match=r"class 'rare' has a single row") as e:
        prepare(make_cfg(comp, "cv.n_folds=2"))
    assert "use cv.n_folds=2 or fewer" not in str(e.value)


def test_feature_cols_as_one_string(make_comp: Callable[..., Comp], make_cfg: Callable) -> None:
    cfg = make_cfg(make_comp(), "data.feature_cols=num")
    try:
        assert load_competition(cfg.data).feature_cols == ["num"]
    except UserError as e:
        assert "list" in str(e), str(e)


def test_good_competition_passes_every_check(make_comp: Callable[..., Comp], make_cfg: Callable) -> None:
    """The baseline for the cases above: the unedited competitions load."""
    expected = {"plain": "binary", "images": "binary", "text": "binary", "regression": "regression"}
    for kind, task in expected.items():
        loaded = load_competition(make_cfg(_make(make_comp, kind, name=kind)).data)
        assert loaded.task == task
