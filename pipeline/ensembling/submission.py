"""The submission: test predictions in `sample_submission.csv`'s exact format (ids, columns, types).

What goes in a target column follows what the sample holds there: labels (in the original label space) or
probabilities (binary: P(classes[1]); multiclass: one column per class). Without a sample: id + target,
probabilities for probability metrics (roc_auc, logloss) and labels for label metrics (accuracy, ...).
"""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.choices import MULTI, Task
from pipeline.data.contract import check_sample
from pipeline.ensembling.members import Context, Format
from pipeline.errors import UserError
from pipeline.metrics import get_metric

log = logging.getLogger(__name__)


def _labels(pred: np.ndarray, ctx: Format) -> pd.Series:
    return pd.Series(np.asarray(ctx.classes, dtype=object)[pred.argmax(axis=1)])


def _holds_labels(col: pd.Series, ctx: Format) -> bool:
    """Labels, not probabilities: non-numeric values, or values that are all classes (unless the metric reads
    probabilities: a 0-filled sample for an AUC competition asks for probabilities)."""
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return True
    all_classes = col.astype(str).isin([str(c) for c in ctx.classes]).all()
    return bool(all_classes and not ctx.metric.needs_proba)


def _target_column(col: pd.Series, pred: np.ndarray, ctx: Format, path: Path) -> pd.Series:
    """One target column: values (regression), labels, or P(classes[1]) (binary)."""
    if ctx.classes is None:
        return pd.Series(pred[:, 0])
    if _holds_labels(col, ctx):
        labels = _labels(pred, ctx)
        return labels.astype(col.dtype) if pd.api.types.is_numeric_dtype(col) else labels
    if len(ctx.classes) == 2:
        return pd.Series(pred[:, 1])
    raise UserError(
        f"{path} has one probability column '{col.name}' but the task has {len(ctx.classes)} "
        f"classes: give one column per class ({', '.join(ctx.columns[:5])}, ...) or labels"
    )


def _sample_order(sample: pd.DataFrame, test_ids: np.ndarray, ctx: Format, path: Path) -> np.ndarray:
    if ctx.id_col not in sample.columns:
        raise UserError(f"{path} has no id column '{ctx.id_col}' (columns: {', '.join(map(str, sample.columns))})")
    order = pd.Index(test_ids.astype(str)).get_indexer(sample[ctx.id_col].astype(str))
    if (order < 0).any() or len(sample) != len(test_ids):
        raise UserError(
            f"{path} ids differ from the test predictions' ({len(sample)} vs {len(test_ids)} rows, "
            f"{int((order < 0).sum())} unknown ids): is data.sample_submission this competition's?"
        )
    return order


def from_sample(pred: np.ndarray, test_ids: np.ndarray, ctx: Format, path: Path) -> pd.DataFrame:
    """Fill the sample's target columns with `pred`, in the sample's id order, columns and dtypes."""
    if not path.is_file():
        raise UserError(f"sample submission not found: {path} (set data.sample_submission=null for id + target)")
    return fill_sample(pd.read_csv(path), pred, test_ids, ctx, path)


def sample_for(sample: pd.DataFrame, test_ids: np.ndarray, id_col: str) -> pd.DataFrame:
    """The sample's columns and dtypes for other test ids (new rows to predict), in their order."""
    out = pd.DataFrame({id_col: test_ids})
    for c in sample.columns.drop(id_col):
        out[c] = np.resize(sample[c].to_numpy(), len(test_ids))  # values of the sample's kind (labels or numbers)
    return out


def _multilabel(pred: np.ndarray, ctx: Format) -> np.ndarray:
    """0/1 per label: P(label) at or above its threshold (chosen out of fold; 0.5 without one)."""
    return (pred >= np.asarray(ctx.thresholds if ctx.thresholds is not None else 0.5)).astype(int)


def _joined(pred: np.ndarray, ctx: Format) -> np.ndarray:
    """Each row's labels joined by `data.label_sep`, as the training file writes them."""
    names = np.asarray(ctx.columns, dtype=object)
    return np.array([ctx.info.label_sep.join(names[row.astype(bool)]) for row in _multilabel(pred, ctx)], dtype=object)


def _target_values(pred: np.ndarray, ctx: Format, labels: bool) -> np.ndarray:
    """Several targets' columns: values, P(label) or (`labels`) 0/1."""
    return _multilabel(pred, ctx) if labels and ctx.task == Task.MULTILABEL else pred


def _fill_multi(out: pd.DataFrame, targets: list, pred: np.ndarray, ctx: Format, path: Path) -> pd.DataFrame:
    """Several targets: one column each (0/1 where the sample holds integers and the metric reads labels), or one
    column of joined labels (`data.label_sep`)."""
    if len(targets) == 1 and ctx.info.label_sep:
        out[targets[0]] = _joined(pred, ctx)
    elif sorted(map(str, targets)) == sorted(ctx.columns):
        for c in targets:
            labels = pd.api.types.is_integer_dtype(out[c]) and not ctx.metric.needs_proba
            out[c] = _target_values(pred, ctx, labels)[:, ctx.columns.index(str(c))]
    else:
        raise UserError(f"{path} has target columns {targets[:6]}: expected one per target ({', '.join(ctx.columns)})")
    return out


def fill_sample(sample: pd.DataFrame, pred: np.ndarray, test_ids: np.ndarray, ctx: Format, path: Path):
    """`from_sample` on a sample already read (`path` names it in errors)."""
    pred = pred[_sample_order(sample, test_ids, ctx, path)]
    targets = [c for c in sample.columns if c != ctx.id_col]
    out = sample.copy()
    if ctx.task in MULTI:
        return _fill_multi(out, targets, pred, ctx, path)
    if ctx.classes is not None and len(targets) > 1 and sorted(map(str, targets)) == sorted(ctx.columns):
        for c in targets:  # one probability column per class, in the sample's column order
            out[c] = pred[:, ctx.columns.index(str(c))]
    elif len(targets) == 1:
        out[targets[0]] = _target_column(sample[targets[0]], pred, ctx, path).to_numpy()
    else:
        raise UserError(
            f"{path} has target columns {targets[:6]}: expected one target column, or one column per "
            f"class ({', '.join(ctx.columns[:6])})"
        )
    return out


def default_format(pred: np.ndarray, test_ids: np.ndarray, ctx: Format) -> pd.DataFrame:
    """id + target: values, labels (label metrics) or probabilities (binary P(classes[1]); else per class)."""
    out = pd.DataFrame({ctx.id_col: test_ids})
    target = ctx.info.target
    if ctx.task in MULTI and ctx.info.label_sep:
        out[target] = _joined(pred, ctx)
    elif ctx.task in MULTI:
        values = _target_values(pred, ctx, not ctx.metric.needs_proba)
        for i, c in enumerate(ctx.columns):
            out[c] = values[:, i]
    elif ctx.classes is None:
        out[target] = pred[:, 0]
    elif not ctx.metric.needs_proba:
        out[target] = _labels(pred, ctx).to_numpy()
    elif len(ctx.classes) == 2:
        out[target] = pred[:, 1]
    else:
        for i, c in enumerate(ctx.columns):
            out[c] = pred[:, i]
    return out


def build_submission(pred: np.ndarray, test_ids: np.ndarray, ctx: Format) -> pd.DataFrame:
    """The submission table for the chosen method's test predictions."""
    sample = ctx.info.sample_submission
    if sample:
        return from_sample(pred, test_ids, ctx, Path(sample))
    return default_format(pred, test_ids, ctx)


def apply_command_line(ctx: Context, data, test_ids: np.ndarray) -> None:
    """Use `data.metric` and `data.sample_submission` given to the ensemble stage in place of what training saved,
    or refuse in one line when they do not fit the trained members (their task, classes and test ids)."""
    metric = data.get("metric")
    if metric not in (None, "auto") and metric != ctx.metric.saved:
        ctx.metric = get_metric(metric, ctx.task)  # one line when it does not fit the members' task
        log.info("metric: %s (data.metric; training scored %s)", metric, ctx.info.metric)
    sample = data.get("sample_submission")
    if sample and str(sample) != ctx.info.sample_submission:
        if not Path(sample).is_file():
            raise UserError(f"data.sample_submission file not found: {sample} (set it to null to write id + target)")
        check_sample(Path(sample), pd.DataFrame({ctx.id_col: test_ids}), ctx.id_col, ctx.test_csv)
        log.info("submission format: %s (data.sample_submission)", sample)
        ctx.info = replace(ctx.info, sample_submission=str(sample))
    width = 1 if ctx.classes is None else len(ctx.classes)
    build_submission(np.zeros((len(test_ids), width)), test_ids, ctx)  # a format that does not fit stops here
