"""Members taught by the saved ensemble: a distilled student (`model=distill`) and pseudo-labels (`pseudo_labels=`),
each fold taught only by what never saw its validation rows; predict reproduces their test.csv."""

import copy

import numpy as np
import pandas as pd
import pytest
from conftest import build_cfg, comp_cfg

from pipeline import ensemble
from pipeline.artifacts import CompetitionInfo, ModelFolder
from pipeline.ensembling.scoring import evaluate_method
from pipeline.errors import UserError
from pipeline.models.student import Student, soft_targets
from pipeline.prepare import prepare
from pipeline.training import job, pseudo
from pipeline.training.job import train_job
from pipeline.training.predictor import predict_member
from pipeline.training.teacher import Teacher, teacher_fold_train

FAST = ["trainer.progress_bar=false", "cv.n_folds=2"]


def taught(make_comp, tmp_path, regression: bool = False):
    """A tiny competition with two members and a weighted ensemble over them: the teacher."""
    labels = tuple(np.linspace(1.0, 50.0, 40)) if regression else ("no", "yes")
    comp = make_comp(n_train=80, n_test=30, labels=labels)
    out = tmp_path / "out"
    for model in ("tabular_lgbm", "tabular_hgb"):
        cfg = comp_cfg(comp, *FAST, f"model={model}", out_dir=out)
        train_job(cfg, prepare(cfg))
    data = [f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out}", "data=csv"]
    ensemble.main(build_cfg(*data, "ensemble.method=weighted", entry="ensemble"))
    return comp, out


def reproduces(out, metrics, comp) -> ModelFolder:
    folder = ModelFolder(out / "models" / metrics["model_id"])
    values = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    pred = predict_member(folder, CompetitionInfo.read(out), comp.test)
    np.testing.assert_allclose(pred.reshape(values.shape), values, atol=1e-6, rtol=1e-6)
    return folder


@pytest.mark.parametrize("regression", [False, True])
def test_distilled_student_is_a_member_that_predict_reproduces(make_comp, tmp_path, regression):
    comp, out = taught(make_comp, tmp_path, regression)
    cfg = comp_cfg(comp, *FAST, "model=distill", out_dir=out)
    metrics = train_job(cfg, prepare(cfg))
    assert "-distill-lgbmregressor-" in metrics["model_id"] and np.isfinite(metrics["cv_score"])
    folder = reproduces(out, metrics, comp)
    oof = pd.read_csv(folder.oof)
    assert list(oof["id"]) == list(comp.train["id"])
    if not regression:
        assert np.allclose(oof[["no", "yes"]].sum(axis=1), 1.0)


def test_pseudo_labels_join_each_folds_training_rows_only(make_comp, tmp_path, monkeypatch):
    comp, out = taught(make_comp, tmp_path)
    cfg = comp_cfg(comp, *FAST, "model=tabular_lgbm", "pseudo_labels=0.5", out_dir=out)
    prep = prepare(cfg)
    seen = []
    add = pseudo.with_pseudo
    monkeypatch.setattr(job, "with_pseudo", lambda ds, rows, labels: seen.append(len(rows)) or add(ds, rows, labels))
    metrics = train_job(cfg, prep)
    assert "-pseudo-" in metrics["model_id"]
    assert seen == [len(comp.test)] * 2  # p >= 0.5: every test row, in each fold's training rows
    folder = reproduces(out, metrics, comp)
    assert len(pd.read_csv(folder.oof)) == len(comp.train)  # validation rows: the training rows alone


def test_taught_members_without_an_ensemble_or_on_regression_are_refused(make_comp, tmp_path):
    comp, out = taught(make_comp, tmp_path, regression=True)
    cfg = comp_cfg(comp, *FAST, "model=distill", out_dir=tmp_path / "untaught")
    with pytest.raises(UserError, match=r"ensemble\.skops not found.*make ensemble"):
        train_job(cfg, prepare(cfg))
    cfg = comp_cfg(comp, *FAST, "model=tabular_lgbm", "pseudo_labels=0.9", out_dir=out)
    with pytest.raises(UserError, match=r"pseudo_labels needs a one-target classification task"):
        train_job(cfg, prepare(cfg))


@pytest.mark.parametrize("value", ["1.5", "0", "high", "true"])
def test_pseudo_labels_not_a_probability_are_refused_before_training(make_comp, tmp_path, value):
    comp = make_comp(n_train=40, n_test=10)
    cfg = comp_cfg(comp, *FAST, "model=tabular_lgbm", f"pseudo_labels={value}", out_dir=tmp_path / "out")
    prep = prepare(cfg)
    with pytest.raises(UserError, match=r"pseudo_labels=\S+: give a probability in \(0, 1\]"):
        train_job(cfg, prep)
    assert not (prep.out_dir / "models").exists()  # nothing written


def test_fold_teacher_on_its_own_fold_is_the_ensembles_nested_oof(make_comp, tmp_path):
    """Fold k's teacher (the ensemble over the members' fold-k models, weights refitted without fold k) predicts fold
    k's rows exactly as the ensemble stage's nested CV did: nothing in it saw fold k's labels."""
    comp, out = taught(make_comp, tmp_path)
    data = build_cfg(f"data.train_csv={comp.train_csv}", "data.target=y", "data=csv", entry="ensemble").data
    t = Teacher.load(out, data)
    method = copy.deepcopy(t.saved["method"])
    method.metric = t.ctx.metric
    nested = evaluate_method(method, t.stack, t.ctx.metric).oof_pred
    folds = t.ctx.folds
    for k, pred in teacher_fold_train(out, data, pd.read_csv(comp.train_csv)).items():
        np.testing.assert_allclose(pred[folds == k], nested[folds == k], atol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_student_reads_its_soft_targets_back_as_the_teachers_probabilities(n_classes):
    """A student whose regressors predicted its targets exactly gives back the teacher's probabilities."""
    proba = np.random.default_rng(0).dirichlet(np.ones(n_classes), 50)
    targets = soft_targets(proba)

    class Exact:  # a regressor that predicts column c of the targets
        def __init__(self, c):
            self.c = c

        def predict(self, X):
            return targets[X[:, 0].astype(int), self.c]

    student = Student([Exact(c) for c in range(targets.shape[1])], n_classes)
    rows = np.arange(50)[:, None]
    np.testing.assert_allclose(student.predict_proba(rows), np.clip(proba, 1e-6, 1 - 1e-6), atol=1e-6)
