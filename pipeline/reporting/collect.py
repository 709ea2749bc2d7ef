"""Read what the training and ensemble stages left in `outputs/<name>/` (files only: no stage code is run)."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from pipeline.advisor.diagnosis import Diagnosis, diagnose
from pipeline.advisor.rules import read_advice
from pipeline.advisor.thresholds import Thresholds
from pipeline.artifacts import ModelFolder, model_folders

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A complete model folder as the report reads it: metrics, history, resolved config, diagnosis, advisor findings.

    (Not `pipeline.zoo.plan.Member`, a member the zoo plans to train.)
    """

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

    @property
    def thresholds(self) -> Thresholds:
        """The monitor thresholds this model trained under."""
        return Thresholds.of(self.config.get("monitors") if self.config is not None else None)


def read_model(folder: ModelFolder) -> TrainedModel:
    """A complete model folder; history, config and advice are optional."""
    metrics, history, config = folder.read_metrics(), folder.read_history(), folder.read_config()
    try:
        advice = read_advice(folder) if config is not None or folder.advice.is_file() else {}
    except Exception as e:  # an older or hand-edited config: the rest of the report still helps
        log.warning("%s: advisor findings unavailable (%s)", folder.path, e)
        advice = {}
    return TrainedModel(
        metrics.get("model_id", folder.name), folder.path, metrics, history, config, diagnose(history), advice
    )


def read_models(out_dir: Path) -> list[TrainedModel]:
    """Every complete model under out_dir, best CV score first."""
    members = [read_model(f) for f in model_folders(out_dir)]
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
