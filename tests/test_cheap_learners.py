"""Cheap level-1 learners that err elsewhere than boosted trees (random forest, extra trees, kNN, shallow and deep
LightGBM) on tiny real tables: each preset trains, and its saved fold models reproduce test.csv."""

import numpy as np
import pandas as pd
import pytest
from conftest import comp_cfg

from pipeline.artifacts import CompetitionInfo, ModelFolder
from pipeline.prepare import prepare
from pipeline.training.job import train_job
from pipeline.training.predictor import predict_member

BINARY, REGRESSION = ("no", "yes"), tuple(np.linspace(1.0, 50.0, 40))
SMALL = {  # fewer trees and rounds, each on one task (the ...Classifier -> ...Regressor swap is generic)
    "tabular_rf": (REGRESSION, ["model.head.estimator.n_estimators=20"]),
    "tabular_et": (BINARY, ["model.head.estimator.n_estimators=20"]),
    "tabular_knn": (REGRESSION, ["model.head.estimator.n_neighbors=5"]),
    "tabular_lgbm_shallow": (BINARY, ["model.head.estimator.n_estimators=50"]),
    "tabular_lgbm_deep": (REGRESSION, ["model.head.estimator.n_estimators=50"]),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread per fit


@pytest.mark.parametrize("preset", list(SMALL))
def test_member_reproduces_its_test_predictions(make_comp, tmp_path, preset):
    labels, small = SMALL[preset]
    comp = make_comp(n_train=80, n_test=20, labels=labels)
    cfg = comp_cfg(comp, "trainer.progress_bar=false", "cv.n_folds=2", f"model={preset}", *small, out_dir=tmp_path)
    prep = prepare(cfg)
    metrics = train_job(cfg, prep)
    kind = "regressor" if len(labels) > 2 else "classifier"
    assert kind in metrics["model_id"]  # the ...Classifier preset became its ...Regressor twin
    folder = ModelFolder(prep.out_dir / "models" / metrics["model_id"])
    expected = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    pred = predict_member(folder, CompetitionInfo.read(prep.out_dir), comp.test)
    np.testing.assert_allclose(pred.reshape(expected.shape), expected, atol=1e-6, rtol=1e-6)
