"""Refit-full: one model refitted on every row at the folds' mean size makes test.csv; the OOF stays the fold models';
predict (and so the bundle) reproduces test.csv from the saved refit model."""

import numpy as np
import pandas as pd
import pytest
from conftest import comp_cfg

from pipeline.artifacts import CompetitionInfo, ModelFolder
from pipeline.errors import UserError
from pipeline.prepare import prepare
from pipeline.training.job import model_id, train_job
from pipeline.training.predictor import predict_member

FAST = ["trainer.max_epochs=3", "trainer.progress_bar=false", "trainer.batch_size=16", "cv.n_folds=2"]
MEMBERS = {  # name: (regression?, overrides)
    "lgbm": (False, ["model=tabular_lgbm"]),
    "catboost_native": (False, ["model=tabular_catboost", "model.head.estimator.iterations=30"]),
    "xgb": (True, ["model=tabular_xgb", "model.head.estimator.n_estimators=30"]),
    "hgb": (True, ["model=tabular_hgb"]),
    "mlp": (False, ["model=tabular"]),
}


def train(make_comp, tmp_path, regression: bool, overrides: list[str]):
    labels = tuple(np.linspace(1.0, 50.0, 40)) if regression else ("no", "yes")
    comp = make_comp(labels=labels)
    cfg = comp_cfg(comp, *FAST, *overrides, out_dir=tmp_path / "out")
    prep = prepare(cfg)
    return prep, comp, cfg


@pytest.mark.parametrize("name", MEMBERS)
def test_refit_member_makes_test_csv_and_predict_reproduces_it(make_comp, tmp_path, name):
    regression, overrides = MEMBERS[name]
    prep, comp, cfg = train(make_comp, tmp_path, regression, overrides)
    plain = train_job(cfg, prep)
    cfg.model.refit_full = True
    metrics = train_job(cfg, prep)
    assert metrics["model_id"] != plain["model_id"] and "-refit-" in metrics["model_id"]
    folder, base = ModelFolder(prep.out_dir / "models" / metrics["model_id"]), prep.out_dir / "models"
    assert folder.has_refit() and folder.refit.with_suffix(".skops") in folder.model_files()
    sizes = metrics["best_epochs"] if name == "mlp" else None
    expected = round(np.mean([s + 1 for s in sizes])) if sizes else metrics["refit_full"]["size"]
    assert metrics["refit_full"]["size"] == expected and metrics["refit_full"]["rows"] == len(comp.train)
    # the OOF (and so the CV) is the fold models'; only test.csv comes from the refit model
    oof = pd.read_csv(folder.oof)
    pd.testing.assert_frame_equal(oof, pd.read_csv(base / plain["model_id"] / "oof.csv"))
    values = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    pred = predict_member(folder, CompetitionInfo.read(prep.out_dir), comp.test)
    np.testing.assert_allclose(pred.reshape(values.shape), values, atol=1e-6, rtol=1e-6)


def test_refit_of_a_gbm_uses_the_folds_mean_rounds(make_comp, tmp_path):
    prep, comp, cfg = train(make_comp, tmp_path, True, ["model=tabular_lgbm", "model.refit_full=true"])
    metrics = train_job(cfg, prep)
    folder = ModelFolder(prep.out_dir / "models" / metrics["model_id"])
    rounds = folder.read_history()["best_iteration"]
    assert metrics["refit_full"]["size"] == max(1, round(rounds.mean()))
    est = folder.read_refit_model()[0]["estimator"]
    assert est.n_estimators == metrics["refit_full"]["size"] and est.booster_.num_trees() == est.n_estimators


def test_refit_of_a_member_without_a_size_is_refused_in_one_line(make_comp, tmp_path):
    prep, _, cfg = train(make_comp, tmp_path, False, ["model=tabular_rf", "model.refit_full=true"])
    with pytest.raises(
        UserError, match=r"model\.refit_full=true needs fold models with a size.*RandomForest.*refit_full=false"
    ):
        train_job(cfg, prep)
    assert not ModelFolder(prep.out_dir / "models" / model_id(cfg, "binary")).path.exists()  # nothing written
