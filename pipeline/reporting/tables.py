"""The report's tables as DataFrames: members, advisor findings, update ratios and dead ReLUs."""

import numpy as np
import pandas as pd

from pipeline.reporting.collect import TrainedModel

RATIO_PREFIX, DEAD_PREFIX = "update_ratio_", "dead_relu_"


def model_table(members: list[TrainedModel]) -> pd.DataFrame:
    """One row per model: CV score and spread, epochs, diagnosis and the number of advisor findings."""
    rows = []
    for m in members:
        n = m.diagnosis.numbers
        rows.append(
            {
                "model_id": m.model_id,
                m.metrics.get("metric", "cv_score"): m.score,
                "fold_std": m.metrics.get("cv_std"),
                "epochs": sum(m.metrics.get("epochs", [])),
                "diagnosis": m.diagnosis.verdict,
                "gap": n.get("gap"),
                "rise": n.get("rise"),
                "trend": n.get("trend"),
                "findings": sum(len(v) for v in m.advice.values()),
            }
        )
    return pd.DataFrame(rows)


def advice_table(members: list[TrainedModel]) -> pd.DataFrame:
    """Every advisor finding of every model: when (before/after training), rule, what was found, the fix."""
    rows = [
        {"model_id": m.model_id, "when": when, "rule": f["rule"], "found": f["found"], "fix": f["fix"]}
        for m in members
        for when, findings in m.advice.items()
        for f in findings
    ]
    return pd.DataFrame(rows, columns=["model_id", "when", "rule", "found", "fix"])


def _per_epoch(history: pd.DataFrame, column: str) -> pd.Series:
    """The column's mean over folds per epoch."""
    return history.dropna(subset=[column]).groupby("epoch")[column].mean()


def ratio_table(members: list[TrainedModel]) -> pd.DataFrame:
    """Update/parameter ratio per model and group (or layer): median over epochs and folds, range, flags."""
    rows = []
    for m in members:
        limits = m.thresholds
        for col in (c for c in m.history.columns if c.startswith(RATIO_PREFIX)):
            per_epoch = _per_epoch(m.history, col)
            if per_epoch.empty:
                continue
            outside = int(((per_epoch < limits.ratio_low) | (per_epoch > limits.ratio_high)).sum())
            settled = m.history[m.history["epoch"] >= limits.warmup_epochs][col].dropna()  # as the warnings do
            median = float(np.median(settled if len(settled) else m.history[col].dropna()))
            rows.append(
                {
                    "model_id": m.model_id,
                    "group": col.removeprefix(RATIO_PREFIX),
                    "median_after_warmup": median,
                    "min_epoch": float(per_epoch.min()),
                    "max_epoch": float(per_epoch.max()),
                    "epochs_outside": f"{outside}/{len(per_epoch)}",
                    "status": limits.ratio_status(median),
                }
            )
    return pd.DataFrame(rows)


def dead_relu_table(members: list[TrainedModel]) -> pd.DataFrame:
    """Dead-ReLU share per model and layer: at the last epoch (mean over folds), the worst epoch, a flag."""
    rows = []
    for m in members:
        for col in (c for c in m.history.columns if c.startswith(DEAD_PREFIX)):
            per_epoch = _per_epoch(m.history, col)
            if per_epoch.empty:
                continue
            last = float(per_epoch.iloc[-1])
            rows.append(
                {
                    "model_id": m.model_id,
                    "layer": col.removeprefix(DEAD_PREFIX),
                    "dead_last_epoch": last,
                    "dead_max_epoch": float(per_epoch.max()),
                    "status": f"high (> {m.thresholds.dead_max:.0%})" if last > m.thresholds.dead_max else "ok",
                }
            )
    return pd.DataFrame(rows)
