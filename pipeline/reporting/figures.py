"""Figures as PNG bytes: learning curves per model and the model-selection figure (matplotlib, no display)."""

import io

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.advisor.diagnosis import Diagnosis, mean_curves  # noqa: E402
from pipeline.reporting.selection import Selection  # noqa: E402

DPI = 90  # ~50 KB a figure: a report of 50 models stays a few MB


def to_png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _band(ax, history, column: str, label: str, color: str) -> None:
    """Mean over folds as a line, min-max over folds as a band."""
    if column not in history:  # e.g. train_metric in histories written before it was recorded
        return
    c = mean_curves(history, column)
    if c.empty:
        return
    ax.plot(c.index, c["mean"], color=color, label=label, marker="o", ms=3)
    ax.fill_between(c.index, c["min"], c["max"], color=color, alpha=0.2, lw=0)


def learning_curves(history, title: str, metric: str, diagnosis: Diagnosis) -> bytes:
    """Train/val loss and train/val metric per epoch: mean over folds, band = min-max over folds."""
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    _band(loss_ax, history, "train_loss", "train loss", "tab:blue")
    _band(loss_ax, history, "val_loss", "val loss", "tab:orange")
    _band(metric_ax, history, "train_metric", f"train {metric}", "tab:purple")
    _band(metric_ax, history, "val_metric", f"val {metric}", "tab:green")
    best = diagnosis.numbers.get("best_epoch")
    for ax, name in ((loss_ax, "loss"), (metric_ax, metric)):
        if best is not None:
            ax.axvline(best, color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: {diagnosis.verdict} (band: min-max over folds)", fontsize=9)
    fig.tight_layout()
    return to_png(fig)


def short_labels(levels: list[str]) -> list[str]:
    """Drop the backbone name from `<backbone> <head>` labels when every level shares it."""
    parts = [lvl.split(" ", 1) for lvl in levels]
    if all(len(p) == 2 for p in parts) and len({p[0] for p in parts}) == 1:
        return [p[1] for p in parts]
    return levels


def selection_figure(sel: Selection) -> bytes:
    """Validation loss per complexity level (mean over folds and seeds) and CV score vs complexity."""
    fig, (curve_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    colors = plt.cm.viridis([i / max(1, len(sel.levels) - 1) for i in range(len(sel.levels))])
    names = short_labels(list(sel.histories))
    for color, name, hist in zip(colors, names, sel.histories.values(), strict=True):
        _band(curve_ax, hist, "val_loss", name, color)
    curve_ax.set_xlabel("epoch")
    curve_ax.set_ylabel("val loss")
    curve_ax.legend(fontsize=7)
    curve_ax.grid(alpha=0.3)
    t = sel.levels
    x = range(len(t))
    score_ax.errorbar(x, t["cv_mean"], yerr=t["cv_std"], marker="o", capsize=3, color="tab:blue")
    pick = list(t["level"]).index(sel.recommended)
    score_ax.plot([pick], [t["cv_mean"].iloc[pick]], marker="*", ms=16, color="tab:red", label="recommended")
    labels = [f"{lvl}\n({v})" for lvl, v in zip(short_labels(list(t["level"])), t["verdict"], strict=True)]
    score_ax.set_xticks(list(x), labels, fontsize=7)
    score_ax.set_ylabel(f"CV {sel.metric} (mean +- std over seeds)")
    score_ax.legend(fontsize=8)
    score_ax.grid(alpha=0.3)
    fig.suptitle(f"model selection: {sel.group}", fontsize=9)
    fig.tight_layout()
    return to_png(fig)
