"""RealMLP and TabM (pytabkit) as tabular members on tiny real tables: they train per fold on the fold's own
validation rows, run on the job's device and threads, and their saved fold models reproduce the test predictions."""

import numpy as np
import pandas as pd
import pytest
from conftest import comp_cfg

from pipeline.artifacts import CompetitionInfo, ModelFolder, load_torch
from pipeline.errors import UserError
from pipeline.prepare import prepare
from pipeline.training.estimators import fit_sklearn
from pipeline.training.fold_inputs import fold_datasets
from pipeline.training.job import fold_rows, resolved, train_job
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


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread per fit


def train(comp, out, *overrides):
    cfg = comp_cfg(comp, *FAST, *overrides, out_dir=out)
    prep = prepare(cfg)
    metrics = train_job(cfg, prep)
    return ModelFolder(prep.out_dir / "models" / metrics["model_id"]), CompetitionInfo.read(prep.out_dir), metrics


@pytest.mark.slow  # pytabkit's import and fits: seconds each
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


def test_tabm_learns_from_the_folds_training_rows_on_the_jobs_device(make_comp, tmp_path):
    """The fold's validation rows go to fit as X_val/y_val, so TabM trains on all of the fold's training rows (its
    target mean is theirs; without them it would split 20 % off for early stopping), on the CPU, on 1 thread."""
    comp = make_comp(n_train=80, n_test=20, labels=tuple(np.linspace(1.0, 50.0, 40)))
    cfg = resolved(comp_cfg(comp, *FAST, "model=tabular_tabm", *TINY["tabular_tabm"], out_dir=tmp_path))
    prep = prepare(cfg)
    _, rows = fold_rows(prep.folds)[0]
    datasets = fold_datasets(prep.comp, None, cfg, rows, prep.comp.y, prep.out_dir / "cache").datasets
    est = fit_sklearn(cfg, prep.comp, datasets, 0.0)["model"]
    assert est.cv_alg_interface_.sub_split_interfaces[0].y_mean_ == pytest.approx(prep.comp.y[rows["train"]].mean())
    assert (est.device, est.n_threads) == ("cpu", 1)


@pytest.mark.parametrize(
    "name",
    [
        "pytabkit.models.utils.deserialize",
        "os.system",
        "torch.load",
        "builtins.eval",
        "pytabkit.models.utils.serialize",
    ],
)
def test_a_torch_fold_file_naming_an_untrusted_global_is_refused(tmp_path, name):
    """A forged type list cannot make torch's weights-only unpickler call a function that reads or writes files."""
    with pytest.raises(UserError, match="outside the trusted libraries"):
        load_torch(tmp_path / "fold0.estimator.pt", ["torch.nn.modules.linear.Linear", name])
