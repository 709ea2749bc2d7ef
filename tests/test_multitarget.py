"""Several targets: multilabel (a list of 0/1 columns, or one column of delimited labels) and multiregression (a list
of numeric columns): the contract, the folds, the metrics, the members, the ensemble, the submission and predict."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import Comp, build_cfg
from sklearn import metrics as skm

from pipeline.data.folds import HOLDOUT_TRAIN_ONLY
from pipeline.errors import UserError
from pipeline.metrics import choose_thresholds, get_metric
from pipeline.prepare import prepare

LABELS = ["red_flag", "blue_flag", "green_flag"]


def _labelled(comp: Comp, n_labels: int = 3) -> Comp:
    """Three 0/1 labels that `num` and `cat` predict, plus a column of the same labels joined by spaces."""
    rng = np.random.default_rng(1)
    t = comp.train
    for k, name in enumerate(LABELS[:n_labels]):
        t[name] = (t["num"] + rng.normal(0, 1, len(t)) > 5 + k * 0.5) | (t["cat"] == ["red", "blue", "green"][k])
        t[name] = t[name].astype(int)
    t["tags"] = t[LABELS[:n_labels]].apply(lambda r: " ".join(n for n in r.index if r[n]), axis=1)
    t["spend"] = t["num"] * 3 + rng.normal(0, 0.5, len(t))  # a second numeric target beside `y2`
    t["y2"] = (t["cat"] == "red") * 2.0 + rng.normal(0, 0.1, len(t))
    return comp.write()


def _probabilities(df: pd.DataFrame) -> bool:
    return bool(((df >= 0) & (df <= 1)).all().all())


def _target(*names: str) -> str:
    return f"data.target=[{','.join(names)}]"


def test_a_target_list_of_01_columns_is_multilabel_and_delimited_labels_match(make_comp, make_cfg) -> None:
    comp = _labelled(make_comp(n_train=60))
    listed = prepare(make_cfg(comp, _target(*LABELS), "data.feature_cols=[num,cat]")).comp
    assert listed.task == "multilabel" and listed.classes == LABELS and listed.y.shape == (60, 3)
    assert listed.metric.name == "roc_auc" and listed.feature_cols == ["num", "cat"]
    joined = prepare(make_cfg(comp, "data.target=tags", "data.label_sep=' '", "data.feature_cols=[num,cat]")).comp
    assert joined.task == "multilabel" and joined.classes == sorted(LABELS)
    order = [LABELS.index(c) for c in joined.classes]
    np.testing.assert_array_equal(joined.y, listed.y[:, order])
    assert "tags" not in joined.feature_cols and not set(LABELS) & set(listed.feature_cols)


def test_a_target_list_of_numbers_is_multiregression(make_comp, make_cfg) -> None:
    comp = _labelled(make_comp(n_train=60))
    prep = prepare(make_cfg(comp, _target("spend", "y2"), "data.feature_cols=[num,cat]"))
    assert prep.comp.task == "multiregression" and prep.comp.classes == ["spend", "y2"]
    assert prep.comp.y.dtype == float and prep.comp.metric.name == "rmse"
    assert json.loads((Path(prep.out_dir) / "folds.json").read_text())["cv"]["scheme"] == "kfold"


def test_multilabel_folds_hold_every_label_in_every_fold(make_comp, make_cfg) -> None:
    comp = _labelled(make_comp(n_train=60))
    prep = prepare(make_cfg(comp, _target(*LABELS), "data.feature_cols=[num,cat]"))
    assert json.loads((Path(prep.out_dir) / "folds.json").read_text())["cv"]["scheme"] == "stratified"
    for k in range(5):
        assert (prep.comp.y[prep.folds == k].sum(0) > 0).all()
    assert HOLDOUT_TRAIN_ONLY not in prep.folds


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([_target("red_flag", "missing")], "has no target column 'missing'"),
        ([_target("red_flag", "cat")], "must hold 0/1 labels .multilabel. or numbers"),
        ([_target(*LABELS), "data.task=binary"], "takes one target column"),
        ([_target("red_flag", "spend"), "data.task=multilabel"], "needs 0/1 values"),
        (["data.target=tags", "data.label_sep=' '", "data.task=regression"], "makes a multilabel task"),
        ([_target("tags", "y2"), "data.label_sep=' '"], "splits one target column"),
        (["data.target=y2", "data.task=multiregression"], "needs several targets"),
        ([_target("red_flag", "rare")], "label 'rare' is never positive in fold"),
        ([_target("red_flag", "always")], "label 'always' is 1 in every row"),
    ],
    ids=["missing", "text", "task", "not 0/1", "sep task", "sep list", "one target", "rare label", "constant"],
)
def test_bad_targets_refuse_in_one_line_writing_nothing(make_comp, make_cfg, out_dir, args, match) -> None:
    comp = _labelled(make_comp(n_train=60))
    comp.train["rare"] = (comp.train["id"] < 3).astype(int)  # 3 positive rows for 5 folds
    comp.train["always"] = 1
    comp.write()
    with pytest.raises(UserError, match=match):
        prepare(make_cfg(comp, *args, "data.feature_cols=[num,cat]"))
    assert not (out_dir / "folds.csv").exists() and not (out_dir / "competition.json").exists()


def test_multilabel_metrics_average_the_labels() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(int)
    p = np.clip(y * 0.3 + rng.random((400, 3)) * 0.7, 0, 1)
    auc = get_metric("roc_auc", "multilabel")
    assert auc(y, p) == pytest.approx(np.mean([skm.roc_auc_score(y[:, k], p[:, k]) for k in range(3)]))
    logloss = get_metric("logloss", "multilabel")
    assert logloss(y, p) == pytest.approx(np.mean([skm.log_loss(y[:, k], p[:, k]) for k in range(3)]))
    rmse = get_metric("auto", "multiregression")
    assert rmse(np.zeros((4, 2)), np.array([[1.0, 2.0]] * 4)) == pytest.approx(1.5)
    with pytest.raises(UserError, match="does not fit a multilabel task"):
        get_metric("accuracy", "multilabel")


def test_f1_thresholds_are_chosen_on_other_rows() -> None:
    """On noise, thresholds chosen on the rows scored find an F1 that is not there; cross-fitted ones do not."""
    rng = np.random.default_rng(0)
    y, p = (rng.random((300, 4)) < 0.5).astype(int), rng.random((300, 4))
    in_sample = skm.f1_score(y, (p >= choose_thresholds(y, p)).astype(int), average="macro")
    honest = get_metric("f1_macro", "multilabel")(y, p)
    assert honest < in_sample
    strong = np.clip(y * 0.5 + p * 0.5, 0, 1)
    assert get_metric("f1_micro", "multilabel")(y, strong) > 0.9


def _data(comp: Comp, out_dir: Path, *args: str) -> list[str]:
    return ["data=csv", f"data.train_csv={comp.train_csv}", f"paths.output_dir={out_dir}", *args]


FAST_LR = "model.head.estimator={_target_:sklearn.linear_model.LogisticRegression,max_iter:200}"


def test_multilabel_members_ensemble_and_predict(make_comp, make_cfg, out_dir, one_thread) -> None:
    """CatBoost (native categoricals) and LightGBM fit one model per label; the ensemble combines per label, the
    submission follows the sample's columns and predict reproduces it."""
    from pipeline import ensemble, predict
    from pipeline.training.job import train_job

    comp = _labelled(make_comp(n_train=80, n_test=20))
    pd.DataFrame({"id": comp.test["id"], **dict.fromkeys(LABELS[::-1], 0.5)}).to_csv(
        comp.dir / "sample.csv", index=False
    )
    target = [_target(*LABELS), f"data.sample_submission={comp.dir / 'sample.csv'}", "data.feature_cols=[num,cat]"]
    lgbm = ["model=tabular_lgbm", "model.head.estimator.n_estimators=20", "model.head.estimator.min_child_samples=3"]
    catboost = ["model=tabular_catboost", "model.head.estimator.iterations=20"]  # native categoricals: integer codes
    for member in (catboost, lgbm):
        metrics = train_job(cfg := make_cfg(comp, *target, *member), prepare(cfg))
    oof = pd.read_csv(out_dir / "models" / metrics["model_id"] / "oof.csv")
    assert list(oof.columns) == ["id", *LABELS] and _probabilities(oof[LABELS])
    assert metrics["cv_score"] == pytest.approx(get_metric("roc_auc", "multilabel")(cfg_y(comp), oof[LABELS].values))
    ensemble.main(build_cfg(*_data(comp, out_dir, *target), "ensemble.method=stacking", entry="ensemble"))
    sub = pd.read_csv(out_dir / "submission.csv")
    assert list(sub.columns) == ["id", *LABELS[::-1]] and len(sub) == 20 and _probabilities(sub[LABELS])
    predict.main(build_cfg(*_data(comp, out_dir, *target), f"predict.test_csv={comp.test_csv}", entry="predict"))
    again = pd.read_csv(out_dir / "predictions" / "submission.csv")
    np.testing.assert_allclose(again[LABELS].to_numpy(), sub[LABELS].to_numpy(), atol=1e-6)


def cfg_y(comp: Comp) -> np.ndarray:
    return comp.train[LABELS].to_numpy()


def test_delimited_labels_are_submitted_joined_at_out_of_fold_thresholds(make_comp, make_cfg, out_dir) -> None:
    from pipeline import ensemble, predict
    from pipeline.ensembling.saved import load_ensemble
    from pipeline.training.job import train_job

    comp = _labelled(make_comp(n_train=80, n_test=20))
    target = ["data.target=tags", "data.label_sep=' '", "data.metric=f1_micro", "data.feature_cols=[num,cat]"]
    train_job(cfg := make_cfg(comp, *target, "model=tabular", "model.head.type=sklearn", FAST_LR), prepare(cfg))
    ensemble.main(build_cfg(*_data(comp, out_dir, *target), entry="ensemble"))
    sub = pd.read_csv(out_dir / "submission.csv", keep_default_na=False)
    assert list(sub.columns) == ["id", "tags"] and len(sub) == 20
    assert set(" ".join(sub["tags"]).split()) <= set(LABELS)
    thresholds = load_ensemble(out_dir)["thresholds"]
    assert len(thresholds) == 3 and all(0 < t < 1 for t in thresholds)
    predict.main(build_cfg(*_data(comp, out_dir, *target), f"predict.test_csv={comp.test_csv}", entry="predict"))
    again = pd.read_csv(out_dir / "predictions" / "submission.csv", keep_default_na=False)
    assert again["tags"].tolist() == sub["tags"].tolist()


@pytest.mark.slow
def test_networks_train_one_head_for_every_target(make_comp, make_cfg, out_dir) -> None:
    """The torch MLP has one output per label (sigmoid) or per target (values scaled per target)."""
    from pipeline import ensemble
    from pipeline.training.job import train_job

    comp = _labelled(make_comp(n_train=80, n_test=20))
    mlp = ["model=tabular", "trainer.max_epochs=3", "data.feature_cols=[num,cat]", "cv.n_folds=3"]
    for target, name in ((_target(*LABELS), "labels"), (_target("spend", "y2"), "values")):
        cfg = make_cfg(comp, target, *mlp, f"paths.output_dir={out_dir / name}")
        metrics = train_job(cfg, prep := prepare(cfg))
        oof = pd.read_csv(out_dir / name / "models" / metrics["model_id"] / "oof.csv")
        assert oof.shape == (80, 1 + len(prep.comp.classes)) and np.isfinite(metrics["cv_score"])
        if name == "values":  # in the targets' own units: `spend` is ~15, `y2` ~0-2
            assert abs(oof["spend"].mean() - comp.train["spend"].mean()) < 3 and oof["y2"].max() < 3
        else:
            assert _probabilities(oof[LABELS])
        lgbm = [
            "model=tabular_lgbm",
            "model.head.estimator.n_estimators=20",
            "data.feature_cols=[num,cat]",
            "cv.n_folds=3",
        ]
        train_job(cfg := make_cfg(comp, target, *lgbm, f"paths.output_dir={out_dir / name}"), prep)
        ensemble.main(build_cfg(*_data(comp, out_dir / name, target), entry="ensemble"))
        sub = pd.read_csv(out_dir / name / "submission.csv")
        assert list(sub.columns)[1:] == prep.comp.classes and len(sub) == 20


def test_a_custom_metric_reads_the_label_matrix(tmp_path, monkeypatch) -> None:
    (tmp_path / "mlmetrics.py").write_text(
        "import numpy as np\n\ndef exact(y, p):\n    return float((y == p).all(axis=1).mean())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    exact = get_metric({"_target_": "mlmetrics.exact", "greater_is_better": True, "needs": "label"}, "multilabel")
    y = np.array([[1, 0], [0, 1], [1, 1]])
    assert exact(y, np.array([[0.9, 0.2], [0.1, 0.7], [0.6, 0.4]])) == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="a multilabel task needs proba or label"):
        get_metric({"_target_": "mlmetrics.exact", "greater_is_better": True, "needs": "value"}, "multilabel")
