"""Learning-curve diagnosis from a model's history.csv: underfitting, good fit or overfitting, with the numbers.

Pure functions on a history DataFrame (columns fold, epoch, train_loss, val_loss). Every number is computed per
fold, then averaged over the folds:

- gap:   (val_loss - train_loss) / val_loss at the fold's best epoch (lowest val_loss);
- rise:  (val_loss at the last epoch - lowest val_loss) / lowest val_loss;
- trend: relative change of val_loss per epoch over the last TREND_EPOCHS epochs (negative: still falling).

Overfit: the val loss turned up (rise), or a large gap while the val loss no longer falls. Underfit: the val loss
still falls at the end (stopped before converging), or the train loss stays above the val loss. Else good.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

GAP_OVERFIT = 0.25  # val loss > 1.33x the train loss at the best epoch: memorizing the training rows
RISE_OVERFIT = 0.05  # val loss ended > 5 % above its minimum: it turned up while the train loss kept falling
TREND_UNDERFIT = 0.01  # val loss still falling > 1 % per epoch at the end: stopped before converging
GAP_UNDERFIT = -0.10  # train loss > 1.1x val loss: regularization or too little capacity holds the fit back
TREND_EPOCHS = 3


@dataclass(frozen=True)
class Diagnosis:
    """A verdict (underfit | good | overfit | n/a), the sentence explaining it and the numbers that decided it."""

    verdict: str
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


def fold_numbers(h: pd.DataFrame) -> dict[str, float]:
    """gap, rise, trend, best epoch and epoch count of one fold's history (sorted by epoch)."""
    train, val = h["train_loss"].to_numpy(float), h["val_loss"].to_numpy(float)
    best = int(np.nanargmin(val))
    k = min(TREND_EPOCHS, len(val) - 1)
    return {
        "gap": (val[best] - train[best]) / abs(val[best]) if val[best] else np.nan,
        "rise": (val[-1] - val[best]) / abs(val[best]) if val[best] else np.nan,
        "trend": (val[-1] - val[-1 - k]) / (k * abs(val[-1 - k])) if val[-1 - k] else np.nan,
        "best_epoch": float(h["epoch"].iloc[best]),
        "epochs": float(len(val)),
        "train_loss": float(train[best]),
        "val_loss": float(val[best]),
    }


def summarize(history: pd.DataFrame) -> dict[str, float] | None:
    """The fold numbers averaged over folds; None when no fold has two epochs of finite losses."""
    h = history.dropna(subset=["train_loss", "val_loss"]) if {"train_loss", "val_loss"} <= set(history) else None
    if h is None or h.empty:
        return None
    groups = h.groupby("fold") if "fold" in h else [(0, h)]
    rows = [fold_numbers(f.sort_values("epoch")) for _, f in groups if len(f) >= 2]
    if not rows:
        return None
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} | {"folds": float(len(rows))}


HINTS = {
    "overfit": "regularize (augmentation, weight decay, dropout without batch norm), shrink the model or stop earlier",
    "underfit": "train longer (trainer.max_epochs), raise the LR or use a bigger model",
    "good": "",
    "n/a": "",
}


def diagnose(history: pd.DataFrame) -> Diagnosis:
    """Overfit, else underfit, else good; the reason names the numbers that decided it.

    A large gap alone is not overfitting while the val loss still falls (cross-entropy gaps grow as the train loss
    nears 0): it must come with a val loss that has stopped improving.
    """
    n = summarize(history)
    if n is None:
        return Diagnosis("n/a", "no per-epoch train/validation losses (a scikit-learn head, or a single epoch)")
    stalled = n["trend"] >= -TREND_UNDERFIT
    over = []
    if n["rise"] > RISE_OVERFIT:
        over.append(f"val loss ended {n['rise']:.1%} above its minimum (> {RISE_OVERFIT:.0%})")
    if n["gap"] > GAP_OVERFIT and stalled:
        over.append(
            f"train/val gap at the best epoch is {n['gap']:.2f} of the val loss (> {GAP_OVERFIT:.2f}) and the val "
            f"loss no longer falls ({n['trend']:+.1%} per epoch)"
        )
    if over:
        return Diagnosis("overfit", "; ".join(over), n)
    under = []
    if not stalled:
        under.append(f"val loss still falling {-n['trend']:.1%} per epoch at the end (> {TREND_UNDERFIT:.0%})")
    if n["gap"] < GAP_UNDERFIT:
        under.append(f"train loss is above the val loss (gap {n['gap']:.2f} < {GAP_UNDERFIT:.2f})")
    if under:
        return Diagnosis("underfit", "; ".join(under) + f"; gap {n['gap']:.2f}", n)
    reason = (
        f"gap {n['gap']:.2f} (<= {GAP_OVERFIT:.2f}), val loss {n['rise']:.1%} above "
        f"its minimum (<= {RISE_OVERFIT:.0%}), trend {n['trend']:+.1%} per epoch at the end"
    )
    return Diagnosis("good", reason, n)


def mean_curves(history: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per epoch: mean, min and max of `column` over the folds that reached that epoch, and their count."""
    g = history.dropna(subset=[column]).groupby("epoch")[column]
    return pd.DataFrame({"mean": g.mean(), "min": g.min(), "max": g.max(), "folds": g.count()})
