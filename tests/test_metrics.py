"""The metric registry: directions, task checks, and the probability convention (two columns for binary)."""

import numpy as np
import pytest
from sklearn import metrics as skm

from pipeline.errors import UserError
from pipeline.metrics import DEFAULT_METRIC, METRICS, get_metric

GREATER_IS_BETTER = {
    "accuracy": True,
    "balanced_accuracy": True,
    "f1_macro": True,
    "qwk": True,
    "logloss": False,
    "roc_auc": True,
    "rmse": False,
    "mae": False,
    "r2": True,
    "rmsle": False,
}


@pytest.mark.parametrize("name", list(GREATER_IS_BETTER))
def test_direction(name: str) -> None:
    metric = METRICS[name]
    assert metric.greater_is_better is GREATER_IS_BETTER[name]
    assert metric.better(1.0, 0.5) is GREATER_IS_BETTER[name]
    assert not metric.better(0.5, 0.5)


def test_registry_is_the_documented_list() -> None:
    assert set(METRICS) == set(GREATER_IS_BETTER)


@pytest.mark.parametrize(("task", "name"), list(DEFAULT_METRIC.items()))
def test_auto_picks_the_task_default(task: str, name: str) -> None:
    assert get_metric("auto", task).name == name
    assert get_metric(None, task).name == name


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown data.metric 'auc': choose one of (\w+, ){10}\w+$") as error:
        get_metric("auc", "binary")
    assert all(name in str(error.value) for name in METRICS)


@pytest.mark.parametrize(("name", "task"), [("rmse", "binary"), ("logloss", "regression"), ("r2", "multiclass")])
def test_metric_must_fit_the_task(name: str, task: str) -> None:
    with pytest.raises(UserError, match=rf"data.metric '{name}' does not fit a {task} task: choose one of"):
        get_metric(name, task)


def test_binary_roc_auc_reads_the_second_column() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    proba = np.column_stack([1 - p1, p1])
    assert get_metric("roc_auc", "binary")(y, proba) == pytest.approx(skm.roc_auc_score(y, p1))
    assert get_metric("roc_auc", "binary")(y, proba[:, ::-1]) == pytest.approx(1 - skm.roc_auc_score(y, p1))


def test_multiclass_roc_auc() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[y] * 0.7 + 0.1  # rows sum to 1, the true class scores highest
    assert get_metric("roc_auc", "multiclass")(y, proba) == pytest.approx(1.0)
    shuffled = proba[[1, 2, 0, 4, 5, 3]]
    expected = skm.roc_auc_score(y, shuffled, multi_class="ovr")
    assert get_metric("roc_auc", "multiclass")(y, shuffled) == pytest.approx(expected)


def test_classification_metrics_read_probabilities() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2]])
    assert get_metric("accuracy", "binary")(y, proba) == pytest.approx(0.75)
    assert get_metric("logloss", "binary")(y, proba) == pytest.approx(skm.log_loss(y, proba[:, 1]))


def test_rmsle_rejects_a_negative_target() -> None:
    rmsle = get_metric("rmsle", "regression")
    assert rmsle(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.0)
    with pytest.raises(UserError, match=r"metric 'rmsle' needs a non-negative target: choose data.metric=rmse"):
        rmsle(np.array([-1.0, 2.0]), np.array([1.0, 2.0]))


CUSTOM = """import numpy as np

def gini(y, p):  # reads P(class 1) for binary: 2 AUC - 1 by ranks
    order = np.argsort(p)
    ranks = np.empty(len(p)); ranks[order] = np.arange(1, len(p) + 1)
    pos = y == 1
    return 2 * (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()) - 1

def hits(y, labels):
    return float((y == labels).mean())

def mean_error(y, values):
    return float(np.mean(values - y))

def broken(y, p):
    return float("nan")
"""


@pytest.fixture
def custom(tmp_path, monkeypatch) -> str:
    (tmp_path / "mymetrics.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "mymetrics"


def test_custom_metric_reads_what_it_needs(custom: str) -> None:
    y, p = np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    gini = get_metric({"_target_": f"{custom}.gini", "greater_is_better": True, "needs": "proba"}, "binary")
    assert gini(y, p) == pytest.approx(2 * skm.roc_auc_score(y, p[:, 1]) - 1)
    assert gini.name == "mymetrics.gini" and gini.needs_proba and gini.better(0.5, 0.1)
    assert gini.saved == {"_target_": "mymetrics.gini", "greater_is_better": True, "needs": "proba"}
    hits = get_metric({"_target_": f"{custom}.hits", "greater_is_better": True, "needs": "label"}, "binary")
    assert hits(y, p) == 0.5 and not hits.needs_proba
    error = get_metric({"_target_": f"{custom}.mean_error", "greater_is_better": False, "needs": "value"}, "regression")
    assert error(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == 1.5 and error.better(0.1, 0.5)


@pytest.mark.parametrize(
    ("spec", "task", "match"),
    [
        ({"_target_": "nowhere.score", "greater_is_better": True, "needs": "proba"}, "binary", "does not import"),
        ({"_target_": "mymetrics.absent", "greater_is_better": True, "needs": "proba"}, "binary", "does not import"),
        ({"_target_": "mymetrics.gini", "needs": "proba"}, "binary", "greater_is_better"),
        (
            {"_target_": "mymetrics.gini", "greater_is_better": True, "needs": "probs"},
            "binary",
            "proba, label or value",
        ),
        ({"_target_": "mymetrics.gini", "greater_is_better": True, "needs": "proba"}, "regression", "needs value"),
        ({"_target_": "mymetrics.broken", "greater_is_better": True, "needs": "proba"}, "binary", "returned nan"),
    ],
    ids=["no module", "no function", "no direction", "unknown needs", "wrong task", "NaN"],
)
def test_custom_metric_refuses_in_one_line(custom: str, spec: dict, task: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        get_metric(spec, task)(np.array([0, 1]), np.array([[0.4, 0.6], [0.3, 0.7]]))


@pytest.mark.slow
def test_custom_metric_scores_members_ensemble_and_predict(custom: str, make_comp, make_cfg, out_dir) -> None:
    import json

    import pandas as pd
    from conftest import build_cfg

    from pipeline import ensemble, predict
    from pipeline.prepare import prepare
    from pipeline.training.job import train_job

    comp = make_comp(n_train=60, n_test=20)
    metric = "data.metric={_target_: mymetrics.gini, greater_is_better: true, needs: proba}"
    fast = ["model=tabular_lgbm", "model.head.estimator.n_estimators=20", "model.head.estimator.min_child_samples=3"]
    for seed in (0, 1):
        metrics = train_job(cfg := make_cfg(comp, metric, *fast, f"seed={seed}"), prepare(cfg))
    oof = pd.read_csv(out_dir / "models" / metrics["model_id"] / "oof.csv")
    y = (comp.train["y"] == "yes").to_numpy(int)
    assert metrics["metric"] == "mymetrics.gini"
    assert metrics["cv_score"] == pytest.approx(2 * skm.roc_auc_score(y, oof["yes"]) - 1)
    assert json.loads((out_dir / "competition.json").read_text())["metric"]["_target_"] == "mymetrics.gini"
    data = ["data=csv", f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out_dir}"]
    ensemble.main(build_cfg(*data, "ensemble.method=mean", entry="ensemble"))
    board = pd.read_csv(out_dir / "leaderboard.csv")
    assert len(board) >= 3 and json.loads((out_dir / "provenance.json").read_text())["metric"] == "mymetrics.gini"
    predict.main(build_cfg(*data, f"predict.test_csv={comp.test_csv}", entry="predict"))
    assert len(pd.read_csv(out_dir / "predictions" / "submission.csv")) == 20
