"""What the ensemble stage leaves in `outputs/<name>/`: leaderboard.csv, weights.json, correlation.png,
provenance.json and submission.csv. Everything is computed before the first file is written."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig

from pipeline.artifacts import atomic_write, write_csv, write_json
from pipeline.ensembling.members import Context, Stack
from pipeline.ensembling.saved import save_ensemble
from pipeline.ensembling.scoring import Entry, best_entry, best_member, gain_on_test, paired_gain
from pipeline.metrics import Metric

BEST_MEMBER = "best_member"  # the name of the candidate "submit the best single member as is"
HEATMAP_ROWS = 20_000  # rows sampled for the correlation heatmap: plenty for 2-digit correlations


def _gains(e: Entry, ref: Entry, metric: Metric, with_test: bool) -> dict:
    mean, se = paired_gain(e, ref, metric)
    return {
        "gain_vs_best": mean,
        "gain_se": se,
        **({"test_gain_vs_best": gain_on_test(e, ref, metric)} if with_test else {}),
    }


def leaderboard(entries: list[Entry], chosen: Entry, metric: Metric, with_test: bool) -> pd.DataFrame:
    """One row per member and method, best CV first (in the metric's direction), with each row's gain over
    the best member: mean paired per-fold difference, its standard error (and on the test labels)."""
    ref = best_member(entries, metric)
    board = pd.DataFrame(
        [
            {
                "kind": e.kind,
                "name": e.name,
                "cv_mean": e.score.cv_mean,
                "cv_std": e.score.cv_std,
                "oof_score": e.score.oof,
                **({"test_score": e.score.test} if with_test else {}),
                **_gains(e, ref, metric, with_test),
                "chosen": e is chosen,
            }
            for e in entries
        ]
    )
    return board.sort_values("cv_mean", ascending=not metric.greater_is_better, kind="stable").reset_index(drop=True)


def _gain_text(e: Entry, ref: Entry, metric: Metric) -> str:
    mean, se = paired_gain(e, ref, metric)
    on_test = gain_on_test(e, ref, metric)
    return f"{mean:+.5f} +- {se:.5f} per fold" + ("" if on_test is None else f" (test {on_test:+.5f})")


def summary(entries: list[Entry], chosen: Entry, metric: Metric) -> str:
    """The chosen entry, its CV and the gain over the best single member, with its noise (and test scores)."""
    ref = best_member(entries, metric)
    cv = f"{metric.name} CV {chosen.score.cv_mean:.5f} +- {chosen.score.cv_std:.5f}"
    if chosen is ref:
        other = best_entry([e for e in entries if e.kind == "method"] or [ref], metric)
        line = (
            f"chosen: the best member {ref.name} ({cv}), submitted as is; the best method, {other.name}, "
            f"gains {_gain_text(other, ref, metric)} over the best member: not beyond its noise"
        )
    else:
        other = ref
        line = (
            f"chosen: {chosen.name} ({cv}), {_gain_text(chosen, ref, metric)} over the best member "
            f"{ref.name} ({ref.score.cv_mean:.5f})"
        )
    if chosen.score.test is not None:
        line += f"\ntest {metric.name}: {chosen.name} {chosen.score.test:.5f}, {other.name} {other.score.test:.5f}"
    return line


def table(board: pd.DataFrame) -> str:
    """The leaderboard as printed: scores to 5 decimals, the chosen entry starred."""
    shown = board.assign(chosen=board["chosen"].map({True: "*", False: ""}))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.5f}")


def describe(entry: Entry, names: list[str]) -> dict:
    """What an entry submits: a method's weights (or meta-learner), or weight 1.0 on a member."""
    if entry.method is not None:
        return entry.method.describe(names)
    return {"member": entry.name, "weights": {n: float(n == entry.name) for n in names}}


def label(entry: Entry) -> str:
    """The chosen entry as weights.json and provenance.json name it: a method, or `best_member`."""
    return BEST_MEMBER if entry.kind == "member" else entry.name


def weights_doc(entries: list[Entry], chosen: Entry, names: list[str], metric: Metric) -> dict:
    """Every candidate's weights (the best member's: 1.0 on it), the chosen one first under `method`."""
    ref = best_member(entries, metric)
    candidates = sorted([ref, *(e for e in entries if e.kind == "method")], key=lambda e: e is not chosen)
    return {
        "method": label(chosen),
        "best_member": ref.name,
        "members": names,
        "methods": {label(e): describe(e, names) for e in candidates},
    }


def correlation_png(stack: Stack, path: Path) -> Path:
    """Heatmap of the correlation between members' OOF predictions (binary: P(class 1) only)."""
    import matplotlib  # imported here: a second of start-up that only this plot needs

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    rows = np.unique(np.linspace(0, stack.oof.shape[1] - 1, HEATMAP_ROWS).astype(int))
    cols = stack.oof[:, rows, 1:] if stack.oof.shape[2] == 2 else stack.oof[:, rows]
    corr = np.corrcoef(cols.reshape(len(cols), -1).astype(np.float64)) if len(cols) > 1 else np.ones((1, 1))
    size = 3 + 0.3 * len(stack.names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(corr, vmin=min(0.0, np.nanmin(corr)), vmax=1, cmap="viridis")
    ax.set_xticks(range(len(stack.names)), stack.names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(stack.names)), stack.names, fontsize=7)
    if len(stack.names) <= 12:
        for (i, j), v in np.ndenumerate(corr):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.8 else "k")
    fig.colorbar(im, ax=ax, shrink=0.8, label="correlation of OOF predictions")
    ax.set_title("members' OOF correlation (low = more to gain from ensembling)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def command() -> str:
    """The command line that reproduces this run (Hydra overrides included)."""
    if HydraConfig.initialized():
        return " ".join(["python -m pipeline.ensemble", *HydraConfig.get().overrides.task])
    return " ".join(sys.argv)


def provenance(ctx: Context, stack: Stack, entries: list[Entry], chosen: Entry) -> dict:
    """Everything that produced the submission: members, weights, method, metric, code, data and command."""
    weights = describe(chosen, stack.names).get("weights", {})
    ref = best_member(entries, ctx.metric)
    mean, se = paired_gain(chosen, ref, ctx.metric)
    scores = {e.name: e.score for e in entries if e.kind == "member"}
    members = [
        {
            "model_id": n,
            "folder": str(f),
            "cv_mean": scores[n].cv_mean,
            "cv_std": scores[n].cv_std,
            "weight": weights.get(n),
        }
        for n, f in zip(stack.names, stack.folders, strict=True)
    ]
    return {
        "method": label(chosen),
        "best_member": ref.name,
        "gain_vs_best": {"mean": mean, "se": se, "test": gain_on_test(chosen, ref, ctx.metric)},
        "metric": ctx.metric.name,
        "task": ctx.task,
        "cv_mean": chosen.score.cv_mean,
        "cv_std": chosen.score.cv_std,
        "test_score": chosen.score.test,
        "members": members,
        "weights": weights,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "folds_hash": ctx.info.folds_hash,
        "data_hash": ctx.info.data_hash,
        "command": command(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_ensemble(
    ctx: Context,
    stack: Stack,
    entries: list[Entry],
    chosen: Entry,
    submission: pd.DataFrame,
    board: pd.DataFrame,
) -> Path:
    """Write every output (each one atomically); return the submission's path."""
    out = ctx.out_dir
    write_csv(board, out / "leaderboard.csv")
    write_json(weights_doc(entries, chosen, stack.names, ctx.metric), out / "weights.json")
    correlation_png(stack, out / "correlation.png")
    write_json(provenance(ctx, stack, entries, chosen), out / "provenance.json")
    save_ensemble(out, chosen.name, chosen.method, stack.names, ctx.thresholds)  # what `make predict` applies
    return write_csv(submission, out / "submission.csv")
