"""Bad input, as a new user would give it, at every stage: exit code 2, one `error:` line on stderr that names the
culprit and the fix, no traceback, and no new file under outputs/ (or anywhere else).

Most cases run in-process (the command-line check, the data stage, the ensemble stage: what each entry point runs
inside `user_errors`); the `slow` ones start the real entry points, Hydra's run folders included.
"""

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, Comp
from test_ensemble import compose_cfg, make_fake, noisy

from pipeline import ensemble
from pipeline.errors import user_errors
from pipeline.prepare import prepare
from pipeline.schema import check_command_line

OUTPUTS = ROOT / "outputs"
ALL_CASES: list[str] = []  # every case id below, counted for the README


def files(*roots: Path) -> set[Path]:
    """Every file and folder under `roots` (the repository's outputs/: three levels, enough to see a new run)."""
    found = set()
    for root in roots:
        if root == OUTPUTS:
            found |= {p for pattern in ("*", "*/*", "*/*/*") for p in root.glob(pattern)}
        elif root.exists():
            found |= set(root.rglob("*"))
    return found


def stops(capsys: pytest.CaptureFixture, call: Callable[[], object], roots: tuple[Path, ...], match: str) -> str:
    """Run `call` as an entry point does; assert exit 2, one clear line matching `match`, nothing new written."""
    before = files(OUTPUTS, *roots)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        with user_errors():
            call()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(match, lines[0]), lines[0]
    assert files(OUTPUTS, *roots) == before
    return lines[0]


def case(name: str, match: str, *args: str) -> object:
    ALL_CASES.append(name)
    return pytest.param(list(args), match, id=name)


# -- The command line: unknown keys, groups and options; values out of their allowed sets and ranges -------------
TRAIN_LINES = [
    case("typo in a data key", r"unknown config key `data.tagret`.*did you mean `data.target`\?", "data.tagret=y"),
    case("typo in a group", r"unknown config key `modle`.*did you mean `model`\?", "modle=image"),
    case("typo in a nested key", r"did you mean `model.head.type`\?", "model.head.typ=mlp"),
    case("typo in an optimizer key", r"did you mean `optimizer.lr`\?", "optimizer.lrr=0.1"),
    case(
        "a preset's key under model=auto",
        r"model=auto .*has no `model.finetune`: pick a preset first, e.g. `model=image model.finetune=frozen`",
        "model.finetune=frozen",
    ),
    case(
        "unknown model preset",
        r"model=foo: no such option in group 'model'; choose one of auto, .*image, ",
        "model=foo",
    ),
    case("misspelled model preset", r"did you mean `model=image`\?", "model=imag"),
    case("misspelled optimizer", r"did you mean `optimizer=adam`\?", "optimizer=adm"),
    case("misspelled scheduler", r"did you mean `scheduler=cosine`\?", "scheduler=cosin"),
    case("misspelled experiment", r"did you mean `experiment=mnist`\?", "experiment=mnits"),
    case("unknown trainer preset", r"trainer=fast: .*choose one of default", "trainer=fast"),
    case("misspelled launcher", r"did you mean `hydra/launcher=joblib`\?", "hydra/launcher=jobib"),
    case("unparsable override", r"cannot read the override `seed=\[1,2`.*quote lists", "seed=[1,2"),
    case(
        "finetune typo",
        r"unknown model.finetune 'froze': choose one of full, frozen.*did you mean frozen\?",
        "model=image",
        "model.finetune=froze",
    ),
    case("unknown model kind", r"unknown model.kind 'foo': choose one of auto, image, text", "model.kind=foo"),
    case(
        "unknown head type", r"unknown model.head.type 'mpl'.*did you mean mlp\?", "model=image", "model.head.type=mpl"
    ),
    case("unknown activation", r"unknown model.head.activation 'relu6'", "model=image", "model.head.activation=relu6"),
    case("unknown head init", r"unknown model.head.init 'he'", "model=image", "+model.head.init=he"),
    case(
        "unknown loss",
        r"unknown model.loss 'crossentropy'.*did you mean cross_entropy\?",
        "model=image",
        "model.loss=crossentropy",
    ),
    case("unknown pooling", r"unknown model.backbone.pooling 'max'", "model=text", "model.backbone.pooling=max"),
    case(
        "unknown target transform",
        r"unknown model.target_transform 'log'",
        "model=tabular",
        "model.target_transform=log",
    ),
    case("unknown scheduler name", r"unknown scheduler.name 'cos'", "scheduler=cosine", "scheduler.name=cos"),
    case("negative lr", r"optimizer.lr=-0.01 is not allowed: expected a finite number > 0", "optimizer.lr=-0.01"),
    case("zero lr", r"optimizer.lr=0 is not allowed", "optimizer.lr=0"),
    case("lr not a number", r"optimizer.lr='fast' is not allowed", "optimizer.lr=fast"),
    case("infinite lr", r"optimizer.lr=inf is not allowed: expected a finite number", "optimizer.lr=inf"),
    case("negative weight decay", r"optimizer.weight_decay=-1 is not allowed", "optimizer.weight_decay=-1"),
    case(
        "betas out of range",
        r"optimizer.betas=\[0.9,1.5\] is not allowed: expected two numbers",
        "optimizer.betas=[0.9,1.5]",
    ),
    case("negative momentum", r"optimizer.momentum=-0.5", "optimizer=sgd", "optimizer.momentum=-0.5"),
    case("max_epochs 0", r"trainer.max_epochs=0 is not allowed: expected an integer >= 1", "trainer.max_epochs=0"),
    case("max_epochs negative", r"trainer.max_epochs=-3 is not allowed", "trainer.max_epochs=-3"),
    case("max_epochs fractional", r"trainer.max_epochs=2.5 is not allowed", "trainer.max_epochs=2.5"),
    case("batch_size 0", r"trainer.batch_size=0 is not allowed: expected an integer >= 1", "trainer.batch_size=0"),
    case("predict batch 0", r"trainer.predict_batch_size=0", "trainer.predict_batch_size=0"),
    case("negative patience", r"trainer.patience=-1 is not allowed", "trainer.patience=-1"),
    case("accumulation 0", r"trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
    case("gradient clip 0", r"trainer.gradient_clip_val=0 is not allowed", "trainer.gradient_clip_val=0"),
    case("unknown precision", r"unknown trainer.precision 16: choose one of 32-true", "trainer.precision=16"),
    case("unknown accelerator", r"unknown trainer.accelerator 'tpu2'", "trainer.accelerator=tpu2"),
    case("negative workers", r"trainer.num_workers=-1 is not allowed", "trainer.num_workers=-1"),
    case(
        "onnx not a list of kinds",
        r"trainer.onnx=True is not allowed: expected a list of some of image, text, e.g. \[image,text\] or \[\]",
        "trainer.onnx=true",
    ),
    case("onnx unknown kind", r"trainer.onnx=\['text','tabular'\] is not allowed", "trainer.onnx=[text,tabular]"),
    case(
        "early_stopping not a bool",
        r"trainer.early_stopping='maybe' is not allowed: expected true or false",
        "trainer.early_stopping=maybe",
    ),
    case("seed not a number", r"seed='abc' is not allowed: expected an integer", "seed=abc"),
    case("seed fractional", r"seed=1.5 is not allowed: expected an integer", "seed=1.5"),
    case("seed negative", r"seed=-1 is not allowed", "seed=-1"),
    case("bad seed in a sweep", r"seed='abc' is not allowed", "-m", "seed=0,abc"),
    case("bad lr in a sweep", r"optimizer.lr=-1 is not allowed", "-m", "optimizer.lr=0.1,-1"),
    case("n_folds 1", r"cv.n_folds=1 is not allowed: expected an integer >= 2", "cv.n_folds=1"),
    case("n_folds a word", r"cv.n_folds='five' is not allowed", "cv.n_folds=five"),
    case("unknown cv scheme", r"unknown cv.scheme 'loo': choose one of auto, stratified", "cv.scheme=loo"),
    case("val_fraction above 1", r"cv.val_fraction=1.5 is not allowed", "cv.val_fraction=1.5"),
    case("cv seed a word", r"cv.seed='x' is not allowed", "cv.seed=x"),
    case("rebuild not a bool", r"cv.rebuild='yes' is not allowed: expected true or false", "cv.rebuild=yes"),
    case("unknown task", r"unknown data.task 'ordinal': choose one of auto, binary", "data.task=ordinal"),
    case("unknown metric", r"unknown data.metric 'auc': choose one of auto, accuracy", "data.metric=auc"),
    case(
        "unknown encoding",
        r"unknown data.categorical_encoding 'hot'.*did you mean onehot\?",
        "data.categorical_encoding=hot",
    ),
    case("unknown scaling", r"unknown data.numeric_scaling 'minmax'", "data.numeric_scaling=minmax"),
    case("max_length 0", r"data.max_length=0 is not allowed", "data.max_length=0"),
    case("rare_min_frequency 0", r"data.rare_min_frequency=0 is not allowed", "data.rare_min_frequency=0"),
    case("hflip not a bool", r"data.hflip='maybe' is not allowed", "data.hflip=maybe"),
    case("unknown demo", r"unknown data.demo 'cifar': choose one of mnist", "data.demo=cifar"),
    case("missing train_csv", r"data.train_csv is required: add data.train_csv=data/comp/train.csv", "data=csv"),
    case("missing target", r"data.target is required: add data.target=label", "data=csv", "data.train_csv=x/train.csv"),
    case(
        "empty target",
        r"data.target='' is not allowed: expected a non-empty string",
        "data=csv",
        "data.train_csv=x/train.csv",
        "data.target=",
    ),
    case(
        "name climbs out of outputs",
        r"name='../../x' is not a folder name \(outputs go to outputs/<name>/\)",
        "name=../../x",
    ),
    case("absolute name", r"name='/tmp/x' is not a folder name", "name=/tmp/x"),
    case("hidden name", r"name='.x' is not a folder name", "name=.x"),
    case(
        "train_csv in the parent folder",
        r"name='..' is not a folder name",
        "data=csv",
        "data.train_csv=../train.csv",
        "data.target=y",
    ),
    case(
        "train_csv in the working folder",
        r"name='' is not allowed: expected a non-empty string",
        "data=csv",
        "data.train_csv=train.csv",
        "data.target=y",
    ),
    case(
        "finetune on a tabular model",
        r"model.finetune='full' applies to image and text models only",
        "model=tabular",
        "model.finetune=full",
    ),
    case(
        "no finetune mode for an image model",
        r"unknown model.finetune null: choose one of full, frozen, probe_then_full",
        "model=image",
        "model.finetune=null",
    ),
    case(
        "empty MLP",
        r"model.head.hidden=\[\] is not allowed: expected a non-empty list",
        "model=image",
        "model.head.hidden=[]",
    ),
    case("zero-width layer", r"model.head.hidden=\[0\] is not allowed", "model=image", "model.head.hidden=[0]"),
    case("dropout 1.5", r"model.head.dropout=1.5 is not allowed", "model=image", "model.head.dropout=1.5"),
    case(
        "sklearn head without estimator",
        r"model.head.type=sklearn needs model.head.estimator=",
        "model=image",
        "model.head.type=sklearn",
    ),
    case(
        "sparse input for an MLP",
        r"model.sparse_input=true applies to scikit-learn-API heads .*model.head.type=mlp reads dense batches",
        "model=tabular",
        "model.sparse_input=true",
    ),
    case("backbone lr mult 0", r"model.backbone_lr_mult=0 is not allowed", "model=image", "model.backbone_lr_mult=0"),
    case("label smoothing 1", r"model.label_smoothing=1 is not allowed", "model=image", "model.label_smoothing=1"),
    case("negative L1", r"model.l1=-0.1 is not allowed", "model=image", "model.l1=-0.1"),
    case(
        "tiny input size", r"model.backbone.input_size=4 is not allowed", "model=image", "model.backbone.input_size=4"
    ),
    case("layer decay 0", r"model.layer_decay=0 is not allowed", "model=text_finetune", "model.layer_decay=0"),
    case("zoo budget 0", r"zoo.budget_minutes=0 is not allowed", "zoo.budget_minutes=0"),
    case("unknown zoo transform", r"unknown zoo.target_transform 'always'", "zoo.target_transform=always"),
    case("threads 0", r"threads=0 is not allowed: expected an integer >= 1 or null", "threads=0"),
    case("retrain not a bool", r"retrain='yes' is not allowed", "retrain=yes"),
    case("advisor.strict not a bool", r"advisor.strict='maybe' is not allowed", "advisor.strict=maybe"),
]
ENSEMBLE_LINES = [
    case("unknown ensemble method", r"unknown ensemble.method 'foo': choose one of auto, mean", "ensemble.method=foo"),
    case("ensemble select typo", r"unknown ensemble.select 'gian'.*did you mean gain\?", "ensemble.select=gian"),
    case("ensemble key typo", r"did you mean `ensemble.method`\?", "ensemble.metod=mean"),
    case("inner folds 1", r"ensemble.inner_folds=1 is not allowed", "ensemble.inner_folds=1"),
    case("unknown weight optimizer", r"unknown ensemble.weighted.optimizer 'adam'", "ensemble.weighted.optimizer=adam"),
    case("Caruana iterations 0", r"ensemble.weighted.iterations=0 is not allowed", "ensemble.weighted.iterations=0"),
    case("n_jobs -2", r"ensemble.n_jobs=-2 is not allowed", "ensemble.n_jobs=-2"),
    case(
        "unknown meta-learner", r"ensemble/classifier=xgb: .*choose one of hist_gb, logistic", "ensemble/classifier=xgb"
    ),
    case("passthrough not a bool", r"ensemble.stacking.passthrough='yes'", "ensemble.stacking.passthrough=yes"),
]


@pytest.mark.parametrize(("argv", "match"), TRAIN_LINES)
def test_train_command_line(capsys: pytest.CaptureFixture, tmp_path: Path, argv: list[str], match: str) -> None:
    stops(capsys, lambda: check_command_line("train", argv), (tmp_path,), match)


@pytest.mark.parametrize(("argv", "match"), ENSEMBLE_LINES)
def test_ensemble_command_line(capsys: pytest.CaptureFixture, tmp_path: Path, argv: list[str], match: str) -> None:
    stops(capsys, lambda: check_command_line("ensemble", argv), (tmp_path,), match)


@pytest.mark.slow
def test_good_command_lines_pass() -> None:
    """The baseline of the cases above: the documented command lines are accepted."""
    for argv in (
        [],
        ["-m", "experiment=mnist"],
        ["model=tabular_lgbm", "data=adult"],
        ["-m", "seed=0,1", "model=image"],
    ):
        check_command_line("train", argv)
    check_command_line("ensemble", ["ensemble.method=stacking", "ensemble/classifier=hist_gb"])


# -- The data stage: the competition's files --------------------------------------------------------------------
def _cell(df: pd.DataFrame, col: str, row: int, value: object) -> pd.DataFrame:
    df = df.astype({col: object})
    df.loc[row, col] = value
    return df


def _latin1(path: Path, line: int) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = (
        lines[line - 1].replace(b"red", b"r\xe9d").replace(b"blue", b"bl\xe9").replace(b"green", b"gr\xe9en")
    )
    path.write_bytes(b"\n".join(lines))


def _sample(c: Comp, ids: list) -> None:
    pd.DataFrame({"id": ids, "y": 0.5}).to_csv(c.dir / "sample.csv", index=False)


def _edit_train(**cells: tuple[int, object]) -> Callable[[Comp], None]:
    def edit(c: Comp) -> None:
        for col, (row, value) in cells.items():
            c.train = _cell(c.train, col, row, value)
        c.write()

    return edit


def _edit_test(**cells: tuple[int, object]) -> Callable[[Comp], None]:
    def edit(c: Comp) -> None:
        for col, (row, value) in cells.items():
            c.test = _cell(c.test, col, row, value)
        c.write()

    return edit


def data_case(name: str, match: str, edit: Callable[[Comp], None], *overrides: str, kind: str = "plain") -> object:
    ALL_CASES.append(name)
    return pytest.param(kind, edit, list(overrides), match, id=name)


DATA = [
    data_case(
        "inf in a regression target",
        r"train.csv line 5: target 'y' holds inf; a regression target must be finite",
        _edit_train(y=(3, np.inf)),
        kind="regression",
    ),
    data_case(
        "-inf in a regression target", r"line 2: target 'y' holds -inf", _edit_train(y=(0, -np.inf)), kind="regression"
    ),
    data_case(
        "inf in a train feature",
        r"train.csv line 4: column 'num' holds inf; features must be finite",
        _edit_train(num=(2, np.inf)),
    ),
    data_case("-inf in a test feature", r"test.csv line 3: column 'num' holds -inf", _edit_test(num=(1, -np.inf))),
    data_case(
        "latin-1 byte in train.csv",
        r"train.csv line 6: byte 0xe9 is not UTF-8; save the file as UTF-8",
        lambda c: _latin1(c.train_csv, 6),
    ),
    data_case("latin-1 byte in test.csv", r"test.csv line 3: byte 0xe9 is not UTF-8", lambda c: _latin1(c.test_csv, 3)),
    data_case(
        "sample ids are not the test ids",
        r"sample.csv ids differ from .*test.csv: 10 unknown ids \(line 2: id 0\)",
        lambda c: _sample(c, list(range(10))),
        "data.sample_submission=SAMPLE",
    ),
    data_case(
        "sample lacks a test id",
        r"sample.csv ids differ .*: 0 unknown ids, 9 rows for 10 test ids",
        lambda c: _sample(c, list(range(40, 49))),
        "data.sample_submission=SAMPLE",
    ),
    data_case(
        "sample without the id column",
        r"sample.csv has no id column 'id'",
        lambda c: pd.DataFrame({"key": [1]}).to_csv(c.dir / "sample.csv", index=False),
        "data.sample_submission=SAMPLE",
    ),
    data_case(
        "image path climbs out of image_dir",
        r"train.csv line 3: image path '../../x.png' leaves data.image_dir .*set data.allow_outside_image_dir=true",
        _edit_train(image=(1, "../../x.png")),
        kind="images",
    ),
    data_case(
        "absolute image path",
        r"test.csv line 2: image path '/etc/passwd' leaves data.image_dir",
        _edit_test(image=(0, "/etc/passwd")),
        kind="images",
    ),
    data_case(
        "image path through ..",
        r"line 7: image path 'a/../../b.png' leaves",
        _edit_train(image=(5, "a/../../b.png")),
        kind="images",
    ),
    data_case(
        "non-UTF-8 sample",
        r"sample.csv line 2: byte 0xff is not UTF-8",
        lambda c: (c.dir / "sample.csv").write_bytes(b"id,y\n\xff,1\n"),
        "data.sample_submission=SAMPLE",
    ),
]


def _make(make_comp: Callable[..., Comp], kind: str) -> Comp:
    labels = (1.5, 2.25, 3.0, 4.75) if kind == "regression" else ("no", "yes")
    return make_comp(labels=labels, images=kind == "images")


@pytest.mark.parametrize(("kind", "edit", "overrides", "match"), DATA)
def test_data_stage(capsys, make_comp, make_cfg, tmp_path, kind, edit, overrides, match) -> None:
    comp = _make(make_comp, kind)
    edit(comp)
    overrides = [o.replace("SAMPLE", str(comp.dir / "sample.csv")) for o in overrides]
    cfg = make_cfg(comp, *overrides)
    stops(capsys, lambda: prepare(cfg), (tmp_path,), match)


def test_image_paths_outside_allowed_on_request(make_comp, make_cfg, tmp_path) -> None:
    comp = make_comp(images=True)
    comp.train = _cell(comp.train, "image", 0, str(comp.images / "0.png"))  # absolute, inside the folder anyway
    comp.write()
    prepare(make_cfg(comp, "data.allow_outside_image_dir=true"))


def test_many_integer_values_warn_before_regression(make_comp, make_cfg, caplog) -> None:
    comp = make_comp(labels=tuple(range(1000)))
    prepare(make_cfg(comp))
    assert (
        "holds integers with 40 distinct values (> 20): treated as a regression target; set data.task=multiclass"
        in caplog.text
    )


# -- Folds: verified against folds.json, matched by id ----------------------------------------------------------
def _folds_edit(how: str) -> Callable[[Path], None]:
    def edit(csv: Path) -> None:
        df = pd.read_csv(csv)
        if how == "moved":
            df.loc[0, "fold"], df.loc[1, "fold"] = df.loc[1, "fold"], df.loc[0, "fold"] + 1
        elif how == "deleted":
            df = df.drop(index=[3, 4])
        elif how == "non-integer":
            df = df.astype({"fold": object})
            df.loc[2, "fold"] = "x"
        elif how == "shuffled":
            df = df.sample(frac=1, random_state=0)
        df.to_csv(csv, index=False)

    return edit


FOLDS = [
    data_case(
        "folds.csv: a row moved to another fold",
        r"folds.csv was edited after it was built \(hash .*\): rebuild it with cv.rebuild=true",
        _folds_edit("moved"),
    ),
    data_case("folds.csv: rows deleted", r"folds.csv was edited after it was built", _folds_edit("deleted")),
    data_case("folds.csv: a non-integer fold", r"folds.csv was edited", _folds_edit("non-integer")),
    data_case("folds.csv: rows reordered", r"folds.csv was edited", _folds_edit("shuffled")),
    data_case(
        "folds.json truncated",
        r"folds.json is not valid JSON \(a truncated or edited file\): rebuild it with cv.rebuild=true",
        lambda csv: csv.with_suffix(".json").write_text('{"folds_hash": "ab'),
    ),
    data_case(
        "folds.csv: a stale file from other data",
        r"folds.csv was built for other data: the training file changed",
        lambda csv: None,
        "EDIT_TRAIN",
    ),
]


@pytest.mark.parametrize(("kind", "edit", "overrides", "match"), FOLDS)
def test_folds_verified(capsys, make_comp, make_cfg, out_dir, tmp_path, kind, edit, overrides, match) -> None:
    comp = make_comp()
    prepare(make_cfg(comp))
    edit(out_dir / "folds.csv")
    if overrides == ["EDIT_TRAIN"]:
        comp.train = _cell(comp.train, "num", 0, 99.0)
        comp.write()
    stops(capsys, lambda: prepare(make_cfg(comp)), (tmp_path,), match)


def test_folds_matched_by_id_not_position(make_comp, make_cfg, out_dir) -> None:
    """A competition built before folds.json held the file's hash: reordered rows still match by id."""
    comp = make_comp()
    first = prepare(make_cfg(comp)).folds
    meta = pd.read_json(out_dir / "folds.json", typ="series").drop("csv_hash")
    meta.to_json(out_dir / "folds.json")
    _folds_edit("shuffled")(out_dir / "folds.csv")
    assert (prepare(make_cfg(comp)).folds == first).all()


# -- The ensemble stage: the training stage's outputs and its own command line --------------------------------------
def _member(fake, name: str = "m1") -> Path:
    rng = np.random.default_rng(0)
    return fake.member(name, noisy(fake.y, "binary", 2.0, rng), noisy(fake.y_test, "binary", 2.0, rng))


def _other_sample(fake) -> str:
    path = fake.data / "other_sample.csv"
    pd.DataFrame({"id": np.arange(5), "label": 0.5}).to_csv(path, index=False)
    return f"data.sample_submission={path}"


ENSEMBLE = [
    data_case(
        "edited folds.csv at the ensemble",
        r"folds.csv was edited after it was built",
        lambda f: _write_hashed_folds(f, edit=True),
    ),
    data_case(
        "truncated competition.json",
        r"competition.json is not valid JSON \(truncated or edited\): rerun `make train`",
        lambda f: (f.out / "competition.json").write_text('{"task": "bin'),
    ),
    data_case(
        "member oof.csv of 0 bytes",
        r"model .*m1 does not fit: oof.csv is not a readable CSV .*ensemble.skip_invalid=true",
        lambda f: (_member(f) / "oof.csv").write_bytes(b""),
    ),
    data_case(
        "member oof.csv not UTF-8",
        r"m1 does not fit: oof.csv is not a readable CSV \('utf-8' codec",
        lambda f: (_member(f) / "oof.csv").write_bytes(b"id,no,yes\n\xff\xfe,0.5,0.5\n"),
    ),
    data_case(
        "metric that does not fit the members' task",
        r"data.metric 'rmse' does not fit a binary task: choose one of",
        _member,
        "data.metric=rmse",
    ),
    data_case(
        "sample submission of another competition",
        r"other_sample.csv ids differ from .*, 5 rows for 600 test ids; is data.sample_submission this competition's\?",
        _member,
        "OTHER_SAMPLE",
    ),
    data_case(
        "sample submission not found",
        r"data.sample_submission file not found: /no/sample.csv",
        _member,
        "data.sample_submission=/no/sample.csv",
    ),
    data_case(
        "no member matches include",
        r"no complete model under .* matches ensemble.include=\['zzz\*'\]",
        _member,
        "ensemble.include=[zzz*]",
    ),
    data_case(
        "no trained outputs",
        r"folds.json not found: run `make train` for this competition first",
        lambda f: None,
        "paths.output_dir=/nonexistent/out",
    ),
]


def _write_hashed_folds(fake, edit: bool) -> None:
    from pipeline.data.contract import file_hash

    _member(fake)
    meta = pd.read_json(fake.out / "folds.json", typ="series")
    meta["csv_hash"] = file_hash(fake.out / "folds.csv")
    meta.to_json(fake.out / "folds.json")
    if edit:
        _folds_edit("moved")(fake.out / "folds.csv")


@pytest.mark.parametrize(("kind", "edit", "overrides", "match"), ENSEMBLE)
def test_ensemble_stage(capsys, tmp_path, kind, edit, overrides, match) -> None:
    fake = make_fake(tmp_path, n=600, n_test=600)
    edit(fake)
    overrides = [_other_sample(fake) if o == "OTHER_SAMPLE" else o for o in overrides]
    cfg = compose_cfg(fake, *overrides)
    stops(capsys, lambda: ensemble.main(cfg), (tmp_path,), match)


def test_ensemble_honors_metric_and_sample_given_to_it(tmp_path, capsys) -> None:
    fake = make_fake(tmp_path, n=600, n_test=600)
    _member(fake)
    order = np.random.default_rng(1).permutation(fake.test_ids)
    pd.DataFrame({"id": order, "label": 0.0}).to_csv(fake.data / "mine.csv", index=False)
    ensemble.main(compose_cfg(fake, "data.metric=logloss", f"data.sample_submission={fake.data / 'mine.csv'}"))
    out = capsys.readouterr().out
    assert "logloss" in out
    submission = pd.read_csv(fake.out / "submission.csv")
    assert submission["id"].tolist() == order.tolist()


def test_at_least_80_bad_inputs() -> None:
    assert len(ALL_CASES) >= 80, len(ALL_CASES)


# -- The real entry points: Hydra's run and sweep folders are removed too ------------------------------------------
def _run(module: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "args", "match"),
    [
        ("pipeline.train", ["data.tagret=y"], r"did you mean `data.target`\?"),
        ("pipeline.train", ["DATA", "data.target=y", "model=tabular_lgbm"], r"target 'y' holds inf"),
        ("pipeline.train", ["-m", "DATA", "data.target=y", "model=tabular_lgbm"], r"target 'y' holds inf"),
        (
            "pipeline.prepare",
            ["DATA", "data.target=y", "model=image", "model.finetune=froze"],
            r"did you mean frozen\?",
        ),
        ("pipeline.ensemble", ["DATA", "data.target=y"], r"folds.json not found"),
    ],
    ids=["unknown key", "data error in a run", "data error in a multirun", "finetune typo", "ensemble before training"],
)
def test_entry_points_leave_nothing(make_comp, tmp_path, module: str, args: list[str], match: str) -> None:
    comp = make_comp(labels=(1.5, 2.25, 3.0, 4.75))
    comp.train = _cell(comp.train, "y", 3, np.inf)
    comp.write()
    out = tmp_path / "outputs" / "comp"
    args = [a for arg in args for a in (["data=csv", f"data.train_csv={comp.train_csv}"] if arg == "DATA" else [arg])]
    before = files(OUTPUTS, tmp_path)
    result = _run(module, *args, f"paths.output_dir={out}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(match, errors[0]), result.stderr
    assert files(OUTPUTS, tmp_path) == before, files(OUTPUTS, tmp_path) ^ before


def test_every_choice_has_its_implementation() -> None:
    """pipeline/choices.py names each allowed value once; the modules that implement them cover exactly those."""
    from pipeline import choices
    from pipeline.ensembling.registry import METHODS
    from pipeline.ensembling.scoring import SELECTIONS
    from pipeline.metrics import CLASSIFICATION
    from pipeline.models.heads import ACTIVATIONS, INITS

    assert set(ACTIVATIONS) == set(choices.Activation) and set(INITS) == set(choices.HeadInit)
    assert set(METHODS) == set(choices.EnsembleMethod) - {"auto"}
    assert set(SELECTIONS) == set(choices.Select)
    assert set(CLASSIFICATION) | {"regression", "auto", "multilabel", "multiregression"} == set(choices.Task)
