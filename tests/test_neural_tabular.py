"""RealMLP and TabM (pytabkit) as tabular members on tiny real tables: they train per fold on the fold's own
validation rows, run on the job's device and threads, and their saved fold models reproduce the test predictions."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import comp_cfg

from pipeline.artifacts import CompetitionInfo, ModelFolder
from pipeline.prepare import prepare
from pipeline.training.job import train_job
from pipeline.training.predictor import predict_member

TINY = {  # a few epochs of small networks: each member trains in about a second
    "tabular_realmlp": ["model.head.estimator.n_epochs=4", "model.head.regressor.n_epochs=4"],
    "tabular_tabm": [
        f"++model.head.{e}.{k}={v}"
        for e in ("estimator", "regressor")
        for k, v in (("n_epochs", 4), ("tabm_k", 4), ("d_block", 32), ("batch_size", 32))
    ],
}
FAST = ["trainer.progress_bar=false", "cv.n_folds=2"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(comp, out, *overrides):
    cfg = comp_cfg(comp, *FAST, *overrides, out_dir=out)
    prep = prepare(cfg)
    metrics = train_job(cfg, prep)
    return ModelFolder(prep.out_dir / "models" / metrics["model_id"]), CompetitionInfo.read(prep.out_dir), metrics


@pytest.mark.parametrize("labels", [("no", "yes"), tuple(np.linspace(1.0, 50.0, 40))], ids=["binary", "regression"])
@pytest.mark.parametrize("preset", list(TINY))
def test_member_reproduces_its_test_predictions(make_comp, tmp_path, preset, labels):
    comp = make_comp(n_train=80, n_test=20, labels=labels)
    folder, info, metrics = train(comp, tmp_path / "out", f"model={preset}", *TINY[preset])
    assert sorted(p.name for p in (folder.path / "folds").glob("fold0.*")) == [
        "fold0.estimator.pt",
        "fold0.npz",
        "fold0.skops",
    ]
    expected = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    pred = predict_member(folder, info, comp.test)
    np.testing.assert_allclose(pred.reshape(expected.shape), expected, atol=1e-6, rtol=1e-6)
