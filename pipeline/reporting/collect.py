"""Read what the training and ensemble stages left in `outputs/<name>/` (files only: no stage code is run)."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.advisor import read_advice
from pipeline.reporting.diagnosis import Diagnosis, diagnose

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One complete model folder: its metrics, history, resolved config, diagnosis and advisor findings."""

    model_id: str
    folder: Path
    metrics: dict
    history: pd.DataFrame
    config: DictConfig | None
    diagnosis: Diagnosis
    advice: dict[str, list[dict]]

    @property
    def score(self) -> float:
        return float(self.metrics["cv_score"])


def load_member(folder: Path) -> Member:
    """A complete model folder (metrics.json present); history, config and advice are optional."""
    metrics = json.loads((folder / "metrics.json").read_text())
    hist_path, cfg_path = folder / "history.csv", folder / "config.yaml"
    history = pd.read_csv(hist_path) if hist_path.is_file() else pd.DataFrame()
    config = OmegaConf.load(cfg_path) if cfg_path.is_file() else None
    try:
        advice = read_advice(folder) if config is not None or (folder / "advice.json").is_file() else {}
    except Exception as e:  # an older or hand-edited config: the rest of the report still helps
        log.warning("%s: advisor findings unavailable (%s)", folder, e)
        advice = {}
    return Member(metrics.get("model_id", folder.name), folder, metrics, history, config, diagnose(history), advice)


def load_members(out_dir: Path) -> list[Member]:
    """Every complete model under out_dir/models, best CV score first."""
    members = [load_member(f.parent) for f in sorted(Path(out_dir).glob("models/*/metrics.json"))]
    if not members:
        return []
    higher = members[0].metrics.get("greater_is_better", True)
    return sorted(members, key=lambda m: m.score, reverse=higher)


def read_ensemble(out_dir: Path) -> dict:
    """The ensemble stage's leaderboard, weights and heatmap path, each None when absent."""
    out_dir = Path(out_dir)
    board = out_dir / "leaderboard.csv"
    weights = out_dir / "weights.json"
    heatmap = out_dir / "correlation.png"
    return {
        "leaderboard": pd.read_csv(board) if board.is_file() else None,
        "weights": json.loads(weights.read_text()) if weights.is_file() else None,
        "heatmap": heatmap if heatmap.is_file() else None,
    }
