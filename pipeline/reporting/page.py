"""The report page: `outputs/<name>/report/index.html`, self-contained (images base64-embedded, inline CSS), so
it opens from disk, from a Kaggle notebook's output or as an e-mail attachment. The learning-curve and
model-selection PNGs are also written beside it."""

import base64
import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.advisor import diagnosis as dg
from pipeline.advisor.thresholds import Thresholds
from pipeline.artifacts import atomic_write
from pipeline.reporting.collect import TrainedModel, read_ensemble, read_models
from pipeline.reporting.figures import learning_curves, selection_figure
from pipeline.reporting.selection import selections
from pipeline.reporting.tables import advice_table, dead_relu_table, model_table, ratio_table

log = logging.getLogger(__name__)
SECTIONS = ("leaderboard", "ensemble", "curves", "selection", "advice", "monitors")  # element ids, in page order
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;line-height:1.4}
nav a{margin-right:1em} table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left} th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee} .note{color:#666;font-size:13px}
.overfit,.underfit{color:#b35900;font-weight:bold} .good{color:#2a7a2a;font-weight:bold}
figure{margin:1.2em 0} figcaption{font-size:13px}
"""


def img(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded as base64: the page needs no files beside it."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(df: pd.DataFrame | None, table_id: str, empty: str) -> str:
    """A DataFrame as an HTML table with an id, or a note saying why there is none."""
    if df is None or df.empty:
        return f'<p class="note" id="{table_id}">{html.escape(empty)}</p>'
    body = df.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.4g}", escape=True)
    return body.replace("<table", f'<table id="{table_id}"', 1)


def section(sid: str, title: str, *parts: str) -> str:
    """A <section> with an id (the nav links and the tests find it by that id)."""
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def leaderboard_section(members: list[TrainedModel], ens: dict) -> str:
    """The ensemble's leaderboard.csv (when present) and the members table."""
    note = (
        "<p class='note'>Ensemble leaderboard (leaderboard.csv): members and methods scored out of fold.</p>"
        if ens["leaderboard"] is not None
        else "<p class='note'>No leaderboard.csv yet: run <code>make ensemble</code>.</p>"
    )
    board = table_html(ens["leaderboard"], "leaderboard-table", "") if ens["leaderboard"] is not None else ""
    members_html = table_html(model_table(members), "members-table", "no complete models")
    return section("leaderboard", "Leaderboard", note, board, "<h3>Members</h3>", members_html)


def ensemble_section(ens: dict) -> str:
    """The chosen method's weights (weights.json) and the OOF correlation heatmap (correlation.png)."""
    w = ens["weights"]
    if w is None:
        weights = "<p class='note'>No weights.json yet: run <code>make ensemble</code>.</p>"
    else:
        chosen = w.get("methods", {}).get(w.get("method"), {})
        per_member = chosen.get("weights") if isinstance(chosen, dict) else None
        frame = pd.DataFrame({"member": list(per_member), "weight": list(per_member.values())}) if per_member else None
        detail = json.dumps(chosen, indent=1, default=str)[:4000]
        weights = (
            f"<p>Chosen method: <b>{html.escape(str(w.get('method')))}</b></p>"
            + table_html(frame, "weights-table", "the chosen method has no per-member weights")
            + f"<details><summary>what it learned</summary><pre>{html.escape(detail)}</pre></details>"
        )
    heat = ens["heatmap"]
    heatmap = (
        f"<figure id='correlation'>{img(heat.read_bytes(), 'OOF correlation heatmap')}"
        "<figcaption>Correlation of members' OOF predictions (correlation.png)</figcaption></figure>"
        if heat is not None
        else "<p class='note' id='correlation'>No correlation.png yet.</p>"
    )
    return section("ensemble", "Ensemble weights and OOF correlation", weights, heatmap)


def curves_section(members: list[TrainedModel], report_dir: Path) -> str:
    """Learning curves and the diagnosis of every model; the PNGs are also written to report_dir/curves/."""
    explain = (
        f"<p class='note'>Per model: train/val loss and val metric per epoch, mean over folds with a min-max band. "
        f"Diagnosis from the numbers averaged over folds: <b>overfit</b> when the val loss ends more than "
        f"{dg.RISE_OVERFIT:.0%} above its minimum (rise), or the train/val gap at the best epoch exceeds "
        f"{dg.GAP_OVERFIT:.2f} of the val loss while the val loss no longer falls; <b>underfit</b> when the val loss "
        f"still falls more than {dg.TREND_UNDERFIT:.0%} per epoch at the end (trend) or the train loss stays above "
        f"the val loss (gap < {dg.GAP_UNDERFIT:.2f}); otherwise <b>good</b>.</p>"
    )
    figs = []
    for m in members:
        verdict = f"<span class='{m.diagnosis.verdict.replace('/', '')}'>{m.diagnosis.verdict}</span>"
        hint = dg.HINTS[m.diagnosis.verdict]
        text = html.escape(m.diagnosis.reason + (f". Try: {hint}" if hint else ""))
        caption = f"<figcaption><b>{html.escape(m.model_id)}</b>: {verdict}, {text}"
        if m.history.empty or m.diagnosis.verdict == "n/a":
            figs.append(f"<figure class='curve'>{caption}</figcaption></figure>")
            continue
        png = learning_curves(m.history, m.model_id, m.metrics.get("metric", "metric"), m.diagnosis)
        atomic_write(report_dir / "curves" / f"{m.model_id}.png", lambda tmp, b=png: tmp.write_bytes(b))
        figs.append(f"<figure class='curve'>{img(png, f'learning curves {m.model_id}')}{caption}</figcaption></figure>")
    return section("curves", "Learning curves and diagnoses", explain, *figs)


def selection_section(members: list[TrainedModel], report_dir: Path) -> str:
    """One figure, recommendation and table per group of members that differ only in complexity."""
    parts = []
    for i, sel in enumerate(selections(members)):
        png = selection_figure(sel)
        atomic_write(report_dir / f"selection{i}.png", lambda tmp, b=png: tmp.write_bytes(b))
        parts += [
            f"<h3>{html.escape(sel.group)}</h3>",
            f"<figure class='selection'>{img(png, f'model selection {sel.group}')}</figure>",
            f"<p><b>Recommendation: {html.escape(sel.recommended)}</b>: {html.escape(sel.reason)}.</p>",
            table_html(sel.levels, f"selection-table{i}", ""),
        ]
    if not parts:
        parts = ["<p class='note'>No members differ only in complexity (head depth/width or backbone).</p>"]
    return section("selection", "Model selection", *parts)


def monitors_section(members: list[TrainedModel]) -> str:
    """The update-ratio and dead-ReLU tables."""
    limits = Thresholds.of()  # the defaults; each table row is judged by its own model's config
    ratio_note = (
        "<p class='note'>||delta w|| / ||w|| per optimizer step (median per epoch); healthy is about 1e-3, "
        f"warned outside [{limits.ratio_low:.0e}, {limits.ratio_high:.0e}] by default.</p>"
    )
    dead_note = (
        "<p class='note'>Share of a layer's units never active over the validation pass; 10-20 % is normal, "
        f"warned above {limits.dead_max:.0%} by default.</p>"
    )
    return section(
        "monitors",
        "Update/parameter ratio and dead ReLUs",
        "<h3>Update/parameter ratio</h3>",
        ratio_note,
        table_html(ratio_table(members), "update-ratio", "no update ratios in history.csv (monitors.update_ratio)"),
        "<h3>Dead ReLUs</h3>",
        dead_note,
        table_html(dead_relu_table(members), "dead-relu", "no dead-ReLU numbers in history.csv (no ReLU layers?)"),
    )


def render(out_dir: Path, report_dir: Path, members: list[TrainedModel]) -> str:
    """The whole page as one HTML string."""
    ens = read_ensemble(out_dir)
    advice = table_html(advice_table(members), "advice-table", "no advisor findings: every config follows the rules")
    sections = [
        leaderboard_section(members, ens),
        ensemble_section(ens),
        curves_section(members, report_dir),
        selection_section(members, report_dir),
        section("advice", "Advisor findings", advice),
        monitors_section(members),
    ]
    nav = " ".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Training report: {html.escape(out_dir.name)}"
    head = f"<h1>{title}</h1><p class='note'>{len(members)} complete models in {html.escape(str(out_dir))}, {stamp}</p>"
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}</style></head>\n<body>{head}<nav>{nav}</nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(out_dir: Path, report_dir: Path | None = None) -> Path:
    """Write `<report_dir>/index.html` (default `<out_dir>/report/`) for every complete model under out_dir."""
    out_dir = Path(out_dir)
    report_dir = Path(report_dir or out_dir / "report")
    members = read_models(out_dir)
    log.info("report: %d complete models in %s", len(members), out_dir)
    page = render(out_dir, report_dir, members)
    return atomic_write(report_dir / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
