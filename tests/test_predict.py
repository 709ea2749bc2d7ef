"""Prediction from saved fold models: every member kind reproduces its training-time test.csv on the same rows,
and rows in another order and subset get the same numbers."""

import io
import json
import shutil
import subprocess
import sys
import zipfile
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import ROOT, build_cfg, comp_cfg
from skops import io as skops_io

from pipeline import ensemble, predict
from pipeline.artifacts import TYPES, CompetitionInfo, ModelFolder, load_safe
from pipeline.data.tabular import TabularFeatures
from pipeline.ensembling.methods import Selected
from pipeline.ensembling.saved import load_ensemble, needed_members
from pipeline.errors import UserError
from pipeline.metrics import get_metric
from pipeline.prepare import prepare
from pipeline.training.job import train_job
from pipeline.training.predictor import member_competition, predict_member

FAST = ["trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.batch_size=16", "cv.n_folds=2"]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    return path


MEMBERS = {  # name: (competition kind, overrides)
    "lgbm": ("tab", ["model=tabular_lgbm"]),
    "xgb_sparse": ("tab", ["model=tabular_xgb", "model.numeric_scaling=none", "model.sparse_input=true"]),
    "catboost_native": ("tab", ["model=tabular_catboost", "model.head.estimator.iterations=20"]),
    "mlp_regression": ("reg", ["model=tabular"]),
    "lgbm_log1p": ("reg", ["model=tabular_lgbm", "model.target_transform=log1p"]),
    "tfidf": ("text", ["model=text_tfidf"]),
    "nb_lr": ("text", ["model=text_nb"]),
    "text_frozen": ("text", ["model=text", "data.max_length=16"]),  # embedded through ONNX Runtime
    "text_frozen_torch": ("text", ["model=text", "data.max_length=16", "trainer.onnx=[]"]),
    "text_finetune": ("text", ["model=text", "data.max_length=16", "model.finetune=full"]),
    "image_frozen_tta": ("image", ["model=image", "model.tta=true"]),  # embedded through ONNX Runtime
    "image_frozen_torch_tta": ("image", ["model=image", "model.tta=true", "trainer.onnx=[text]"]),
    "image_finetune": ("image", ["model=image", "model.finetune=full"]),
    "image_pixels": ("image", ["model=image_pixels"]),
    "image_scratch": ("image", ["model=image", "model.finetune=full", "model.backbone.weights=null"]),
}


def train(make_comp, tmp_path, kind: str, overrides: list[str], assets: dict) -> tuple[ModelFolder, dict, object]:
    labels = tuple(np.linspace(1.0, 50.0, 40)) if kind == "reg" else ("no", "yes")
    comp = make_comp(labels=labels, text=kind == "text", images=kind == "image")
    extra = []
    if kind == "text":
        extra = [f"model.backbone.name={assets['bert']}"] if "model=text" in overrides else []
    if kind == "image" and "model=image_pixels" not in overrides:
        extra = ["model.backbone.name=resnet18", f"model.backbone.weights={assets['resnet']}"]
        extra = extra[:1] if "model.backbone.weights=null" in overrides else extra  # from scratch: per-fold means
        extra += ["model.backbone.input_size=32"]
    cfg = comp_cfg(comp, *FAST, *overrides, *extra, out_dir=tmp_path / "out")
    prep = prepare(cfg)
    metrics = train_job(cfg, prep)
    info = CompetitionInfo.read(prep.out_dir)
    return ModelFolder(prep.out_dir / "models" / metrics["model_id"]), info, comp


SLOW = (
    "text_frozen",
    "text_frozen_torch",
    "text_finetune",
    "image_frozen_tta",
    "image_frozen_torch_tta",
    "image_finetune",
)
SLOW += ("image_scratch",)  # make test-fast: the tabular, TF-IDF and pixel members


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] * (n in SLOW)) for n in MEMBERS])
def test_member_reproduces_its_test_predictions(make_comp, tmp_path, request, name):
    kind, overrides = MEMBERS[name]
    assets = {"text": {"bert": "tiny_bert"}, "image": {"resnet": "resnet"}}.get(kind, {})  # built only if needed
    assets = {} if "model=image_pixels" in overrides else assets
    folder, info, comp = train(
        make_comp, tmp_path, kind, overrides, {k: request.getfixturevalue(f) for k, f in assets.items()}
    )
    expected = pd.read_csv(folder.test)
    pred = predict_member(folder, info, comp.test)
    values = expected.drop(columns="id").to_numpy()
    np.testing.assert_allclose(pred.reshape(values.shape), values, atol=1e-6, rtol=1e-6)
    # a shuffled half of the rows: the same numbers for those ids
    half = comp.test.sample(frac=0.5, random_state=1)
    sub = predict_member(folder, info, half.reset_index(drop=True))
    np.testing.assert_allclose(sub.reshape(len(half), -1), values[half.index], atol=1e-6, rtol=1e-6)


def test_fold_model_from_other_versions_is_refused(make_comp, tmp_path):
    folder, info, comp = train(make_comp, tmp_path, "tab", ["model=tabular_lgbm"], {})
    path = folder.fold(0).with_suffix(".skops")
    state = load_safe(path)
    state["versions"]["scikit-learn"] = "0.1.0"
    path.write_bytes(skops_io.dumps(state))
    with pytest.raises(UserError, match=r"scikit-learn 0\.1\.0.*install scikit-learn==0\.1\.0"):
        predict_member(folder, info, comp.test)


@pytest.mark.parametrize("listed", [None, "lying"])
def test_fold_model_with_foreign_types_is_refused(make_comp, tmp_path, listed):
    """A fold file holding a type outside the trusted libraries is not loaded: written without a type list (older
    files: audited before loading), or with a list that leaves the type out (skops refuses it while loading)."""
    folder, info, comp = train(make_comp, tmp_path, "tab", ["model=tabular_lgbm"], {})
    path = folder.fold(0).with_suffix(".skops")
    state = load_safe(path) | {"extra": Fraction(1, 3)}
    data = io.BytesIO(skops_io.dumps(state))
    if listed:
        with zipfile.ZipFile(data, "a") as z:
            z.writestr(TYPES, json.dumps(skops_io.get_untrusted_types(data=skops_io.dumps(load_safe(path)))))
    path.write_bytes(data.getvalue())
    with pytest.raises(UserError, match=r"fold0\.skops holds types .*fractions\.Fraction.*not loaded"):
        predict_member(folder, info, comp.test)


# level2 without its guard, which on 60 rows could keep level 1 alone: predict must apply both levels (20 boosting
# rounds: enough trees to check, a second less)
ENSEMBLES = {
    "level2": ["ensemble.method=level2", "ensemble.level2.guard=false", "ensemble.level2.classifiers.gbm.max_iter=20"]
}


@pytest.mark.parametrize(
    "method", [*(pytest.param(m, marks=pytest.mark.slow) for m in ("stacking", "rank", "auto", "level2")), "weighted"]
)
def test_predict_a_shuffled_half_equals_the_ensembles_submission(make_comp, tmp_path, capsys, method):
    """train -> ensemble -> predict on a shuffled half of the test rows: the same rows as submission.csv."""
    comp = make_comp(n_train=60, n_test=20)
    pd.DataFrame({"id": comp.test["id"], "y": 0.5}).to_csv(comp.dir / "sample_submission.csv", index=False)
    out = tmp_path / "out"
    data = [f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out}", "data=csv"]
    for model in ("tabular_lgbm", "tabular", "tabular_hgb"):
        cfg = comp_cfg(comp, *FAST, f"model={model}", out_dir=out)
        train_job(cfg, prepare(cfg))
    chosen = ENSEMBLES.get(method, [f"ensemble.method={method}"])
    ensemble.main(build_cfg(*data, *chosen, "data.metric=logloss", entry="ensemble"))
    if method == "level2":
        assert load_ensemble(out)["method"].levels_ == 2
    expected = pd.read_csv(out / "submission.csv").set_index("id")
    half = comp.test.sample(frac=0.5, random_state=3)
    half.to_csv(tmp_path / "half.csv", index=False)
    target = tmp_path / "pred.csv"
    predict.main(
        build_cfg(*data, f"predict.test_csv={tmp_path / 'half.csv'}", f"predict.output={target}", entry="predict")
    )
    got = pd.read_csv(target)
    assert list(got["id"]) == list(half["id"]) and list(got.columns) == ["id", "y"]  # P(yes), as the sample asks
    pd.testing.assert_frame_equal(got.set_index("id"), expected.loc[half["id"]], atol=1e-6)


def test_members_without_weight_are_not_read(make_comp, tmp_path):
    """A weighted ensemble's zero-weight members are neither predicted nor needed on disk (nor bundled)."""
    comp = make_comp(n_train=60, n_test=20)
    out = tmp_path / "out"
    data = [f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out}", "data=csv"]
    for model in ("tabular_lgbm", "tabular_hgb"):
        cfg = comp_cfg(comp, *FAST, f"model={model}", out_dir=out)
        train_job(cfg, prepare(cfg))
    ensemble.main(build_cfg(*data, "ensemble.method=weighted", entry="ensemble"))
    saved = load_ensemble(out)
    saved["method"].weights_ = np.array([1.0, 0.0])  # the first member only
    assert needed_members(saved) == saved["members"][:1]
    chosen = Selected(get_metric("logloss", "binary"))
    chosen.index_ = 1
    assert needed_members(saved | {"method": chosen}) == saved["members"][1:]  # the member chosen out of fold
    shutil.rmtree(out / "models" / saved["members"][1])
    info = CompetitionInfo.read(out)
    got = predict.predict_rows(out, info, saved, comp.test, progress=False)
    first = predict_member(ModelFolder(out / "models" / saved["members"][0]), info, comp.test)
    np.testing.assert_allclose(got, first, atol=1e-6)


def test_hub_weights_offline_name_the_local_file_fix(monkeypatch):
    import huggingface_hub.constants
    from omegaconf import OmegaConf

    from pipeline.models.backbones import image_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on Kaggle with the internet off
    with pytest.raises(UserError, match=r"model\.backbone\.weights=<local file or folder>"):
        image_backbone(OmegaConf.create({"name": "resnet18", "weights": "hub"}))


def test_members_fitted_alike_share_their_tabular_features(make_comp, tmp_path, monkeypatch):
    """Two seeds of a member fit the same transformer on each fold: predict transforms the rows once a fold."""
    comp = make_comp(n_train=60, n_test=20)
    out, folders = tmp_path / "out", []
    for seed in (0, 1):
        cfg = comp_cfg(comp, *FAST, "model=tabular_lgbm", f"seed={seed}", out_dir=out)
        folders.append(ModelFolder(out / "models" / train_job(cfg, prepare(cfg))["model_id"]))
    info, calls = CompetitionInfo.read(out), []
    transform = TabularFeatures.transform
    monkeypatch.setattr(TabularFeatures, "transform", lambda self, df: calls.append(1) or transform(self, df))
    shared = {}
    for folder in folders:
        got = predict_member(folder, info, comp.test, shared=shared)
        np.testing.assert_allclose(got[:, 1], pd.read_csv(folder.test)["yes"], atol=1e-6)
    assert len(calls) == 2  # 2 folds, 2 members


@pytest.mark.slow
def test_fold_file_whose_list_leaves_out_default_trusted_types_still_loads(make_comp, tmp_path):
    """Files written where skops trusted every scikit-learn estimator by default list only the other types; a fresh
    process (which imports skops without that default list, and without torch) audits them whole and loads them,
    and the files it writes list the scikit-learn types too (loaded in one pass)."""
    folder, _, _ = train(make_comp, tmp_path, "tab", ["model=tabular_lgbm"], {})
    path = folder.fold(0).with_suffix(".skops")
    old = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == TYPES:
                body = json.dumps([t for t in json.loads(body) if not t.startswith("sklearn.")]).encode()
            dst.writestr(item, body)
    path.write_bytes(old.getvalue())
    new = tmp_path / "new.skops"
    code = f"""import json, sys, zipfile
from pipeline.artifacts import TYPES, dump_safe, load_safe
state = load_safe({str(path)!r})
assert "torch" not in sys.modules
dump_safe({{"estimator": state["estimator"]}}, {str(new)!r})
listed = json.loads(zipfile.ZipFile({str(new)!r}).read(TYPES))
print(type(state["estimator"]).__name__, any(t.startswith("sklearn.") for t in listed))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LGBMClassifier", "True"]


def _corrupt(rows: pd.DataFrame, how: str) -> pd.DataFrame:
    rows = rows.copy()
    if how == "no column":
        return rows.drop(columns="num")
    if how == "empty id":
        rows["id"] = rows["id"].astype(object)
        rows.loc[2, "id"] = None
    if how == "duplicated id":
        rows.loc[2, "id"] = rows.loc[1, "id"]
    if how in ("word in a number column", "infinite number"):
        rows["num"] = rows["num"].astype(object)
        rows.loc[2, "num"] = "abc" if how.startswith("word") else "inf"
    if how == "missing text":
        rows.loc[2, "text"] = None
    if how == "missing image":
        rows.loc[2, "image"] = "nope.png"
    return rows


NEW_ROWS = {  # corruption: the one line it gets
    "no column": r"rows\.csv lacks column 'num', which the members read",
    "empty id": r"rows\.csv line 4: empty id in column 'id'",
    "duplicated id": r"rows\.csv line 4: duplicated id 41 in column 'id'",
    "word in a number column": r"rows\.csv line 4: column 'num' holds 'abc', but it is a number in .*train\.csv",
    "infinite number": r"rows\.csv line 4: column 'num' holds inf; features must be finite",
    "missing text": r"rows\.csv line 4: text column 'text' holds nan; every row needs a non-empty string",
    "missing image": r"rows\.csv line 4: image 'nope\.png' not found under .*images \(set predict\.image_dir",
}


@pytest.mark.parametrize("how", list(NEW_ROWS))
def test_bad_new_rows_stop_with_one_line_naming_file_line_and_column(make_comp, tmp_path, how):
    """The rows to predict pass the checks training's test file passed, against what training saw."""
    comp = make_comp(text=True, images=True)
    cfg = comp_cfg(comp, out_dir=tmp_path / "out")
    prep = prepare(cfg)
    info = CompetitionInfo.read(prep.out_dir)
    path = tmp_path / "rows.csv"
    _corrupt(comp.test, how).to_csv(path, index=False)
    rows = pd.read_csv(path)
    assert predict.check_rows(comp.test, info, path, None, cfg.data) == comp.images  # the intact rows pass
    with pytest.raises(UserError, match=NEW_ROWS[how]):
        predict.check_rows(rows, info, path, None, cfg.data)


def test_bad_new_rows_are_refused_before_any_member_and_leave_no_file(make_comp, tmp_path, monkeypatch):
    comp = make_comp(n_train=60, n_test=20)
    out = tmp_path / "out"
    data = [f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out}", "data=csv"]
    cfg = comp_cfg(comp, *FAST, "model=tabular_hgb", out_dir=out)
    train_job(cfg, prepare(cfg))
    ensemble.main(build_cfg(*data, entry="ensemble"))
    _corrupt(comp.test, "word in a number column").to_csv(tmp_path / "rows.csv", index=False)
    monkeypatch.setattr("pipeline.training.predictor.predict_member", lambda *a, **k: pytest.fail("member read"))
    target = tmp_path / "pred.csv"
    overrides = [*data, f"predict.test_csv={tmp_path / 'rows.csv'}", f"predict.output={target}"]
    with pytest.raises(SystemExit) as exc:
        predict.main(build_cfg(*overrides, entry="predict"))
    assert exc.value.code == 2 and not target.exists()


def test_a_test_file_word_in_a_number_column_is_refused_at_training(make_comp, tmp_path):
    comp = make_comp()
    _corrupt(comp.test, "word in a number column").to_csv(comp.test_csv, index=False)
    with pytest.raises(UserError, match=r"test\.csv line 4: column 'num' holds 'abc', but it is a number in"):
        prepare(comp_cfg(comp, out_dir=tmp_path / "out"))


def test_images_beside_the_training_file_are_found_when_predicting(make_comp, tmp_path):
    """data.image_dir=null: training reads image paths relative to train.csv's folder, and so does predict."""
    comp = make_comp(images=True)
    for df in (comp.train, comp.test):
        df["image"] = "images/" + df["image"]
    comp.write()
    cfg = comp_cfg(comp, out_dir=tmp_path / "out")
    cfg.data.image_dir = None
    info = CompetitionInfo.read(prepare(cfg).out_dir)
    assert predict.check_rows(comp.test, info, comp.test_csv, None, cfg.data) == comp.dir
    assert member_competition(info, cfg.data, comp.test).image_dir == comp.dir


def test_rows_whose_category_looks_numeric_get_the_same_predictions(make_comp, tmp_path):
    """A category column with some numeric-looking values ('red', '0', '1'): a file holding only digits there reads
    them as those categories (not as numbers, unseen in training), so its rows get the whole test file's numbers;
    training's own test file is read alike."""
    comp = make_comp(n_train=200, n_test=30)
    for df in (comp.train, comp.test):
        df["cat"] = np.where(df["id"] % 3 == 0, df["cat"], (df["id"] % 2).astype(str))
    comp.train["y"] = np.where(comp.train["cat"] == "1", "yes", "no")
    comp.write()
    out = tmp_path / "out"
    data = [f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out}", "data=csv"]
    cfg = comp_cfg(comp, *FAST, "model=tabular_lgbm", out_dir=out)
    train_job(cfg, prepare(cfg))
    ensemble.main(build_cfg(*data, entry="ensemble"))
    digits = comp.test[comp.test["id"] % 3 != 0]
    digits.to_csv(tmp_path / "digits.csv", index=False)
    assert pd.read_csv(tmp_path / "digits.csv")["cat"].dtype.kind == "i"  # what pandas alone would read
    for rows, target in ((comp.test_csv, "all.csv"), (tmp_path / "digits.csv", "digits.csv")):
        overrides = [*data, f"predict.test_csv={rows}", f"predict.output={tmp_path / target}"]
        predict.main(build_cfg(*overrides, entry="predict"))
    whole = pd.read_csv(tmp_path / "all.csv").set_index("id")
    got = pd.read_csv(tmp_path / "digits.csv").set_index("id")
    pd.testing.assert_frame_equal(got, whole.loc[got.index], atol=1e-6)
    assert whole["y"].loc[got.index].round().eq(got.index % 2).all()  # '1' -> yes: the category was recognized
    comp.test[comp.test["id"] % 3 != 0].to_csv(comp.test_csv, index=False)  # training's test file: digits only
    assert prepare(cfg).comp.test["cat"].tolist() == digits["cat"].tolist()
