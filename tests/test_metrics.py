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
    with pytest.raises(UserError, match=r"unknown data.metric 'auc': choose one of (\w+, ){9}\w+$") as error:
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
