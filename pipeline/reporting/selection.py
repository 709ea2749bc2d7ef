"""Model selection among zoo members that differ only in complexity (head depth/width, backbone size).

Members are grouped by their spec without the complexity keys and the seed; within a group, each complexity
level pools its seeds. The recommendation is the level with the best mean CV score among those whose learning
curves look healthy (diagnosis `good`), with the reason.
"""

import copy
import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from pipeline.advisor.diagnosis import diagnose
from pipeline.choices import HeadType
from pipeline.reporting.collect import TrainedModel
from pipeline.training.job import spec

HEALTHY = "good"


@dataclass
class Selection:
    """One group of members differing only in complexity: a row per level, the pick and why."""

    group: str
    levels: pd.DataFrame  # level, members, cv_mean, cv_std, verdict, gap, rise, trend (sorted by complexity)
    histories: dict[str, pd.DataFrame]  # level -> history of all its members (fold ids unique per member)
    recommended: str
    reason: str
    metric: str


def complexity(cfg) -> tuple[str, tuple]:
    """A readable complexity label (e.g. `resnet18 mlp512x256`) and a sort key (backbone, depth, total width)."""
    m = cfg.model
    hidden = list(m.head.hidden) if m.head.type == HeadType.MLP else []
    name = m.backbone.name.removeprefix("pkg://").split("/")[0] if m.get("backbone") else ""
    head = "mlp" + "x".join(map(str, hidden)) if m.head.type == HeadType.MLP else m.head.type
    return f"{name} {head}".strip(), (name, len(hidden), sum(hidden))


def base_spec(cfg) -> str:
    """A hash of everything that determines predictions except complexity and seed."""
    s = copy.deepcopy(spec(cfg))
    s.pop("seed")
    head = s["model"]["head"]
    for key in ("hidden", "type"):
        head.pop(key, None)
    if isinstance(head.get("estimator"), dict):
        head["estimator"].pop("random_state", None)  # `${seed}` resolved: a seed, not a setting
    if isinstance(s["model"].get("backbone"), dict):
        s["model"]["backbone"].pop("name", None)
        s["model"]["backbone"].pop("weights", None)  # weights files follow the backbone's name
    return hashlib.sha256(json.dumps(s, sort_keys=True, default=str).encode()).hexdigest()[:8]


def group_members(members: list[TrainedModel]) -> dict[str, dict[str, list[TrainedModel]]]:
    """base spec -> complexity label -> members (seeds); only groups with two or more levels."""
    groups: dict[str, dict[str, list[TrainedModel]]] = {}
    for m in members:
        if m.config is None or m.config.model.head.type not in (HeadType.LINEAR, HeadType.MLP):
            continue
        label, _ = complexity(m.config)
        groups.setdefault(base_spec(m.config), {}).setdefault(label, []).append(m)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def pooled_history(members: list[TrainedModel]) -> pd.DataFrame:
    """The members' histories stacked, fold ids made unique per member (seeds count as more folds)."""
    parts = [m.history.assign(fold=f"{i}-" + m.history["fold"].astype(str)) for i, m in enumerate(members)]
    return pd.concat(parts, ignore_index=True)


def level_table(levels: dict[str, list[TrainedModel]]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A row per complexity level (seeds pooled), in complexity order, and each level's pooled history."""
    rows, histories = [], {}
    for label, ms in sorted(levels.items(), key=lambda kv: complexity(kv[1][0].config)[1]):
        histories[label] = pooled_history(ms)
        d = diagnose(histories[label])
        scores = pd.Series([m.score for m in ms])
        rows.append(
            {
                "level": label,
                "members": len(ms),
                "cv_mean": scores.mean(),
                "cv_std": scores.std(ddof=0),
                "verdict": d.verdict,
                **{k: d.numbers.get(k, float("nan")) for k in ("gap", "rise", "trend")},
            }
        )
    return pd.DataFrame(rows), histories


def recommend(table: pd.DataFrame, higher: bool, metric: str) -> tuple[str, str]:
    """The best mean CV among healthy levels (or overall, when none is healthy), and the reason."""
    ranked = table.sort_values("cv_mean", ascending=not higher)
    healthy = ranked[ranked["verdict"] == HEALTHY]
    best_all = ranked.iloc[0]
    if healthy.empty:
        return best_all["level"], (
            f"no level has healthy curves; {best_all['level']} has the best CV {metric} "
            f"({best_all['cv_mean']:.5f}) but is {best_all['verdict']}: fix that first (see its diagnosis)"
        )
    pick = healthy.iloc[0]
    reason = f"best CV {metric} among the healthy levels ({pick['cv_mean']:.5f} over {pick['members']} member(s))"
    if best_all["level"] != pick["level"]:
        reason += (
            f"; {best_all['level']} scores {best_all['cv_mean']:.5f} but is {best_all['verdict']}, "
            "so its score is less likely to hold"
        )
    return pick["level"], reason


def selections(members: list[TrainedModel]) -> list[Selection]:
    """One Selection per group of members that differ only in complexity."""
    out = []
    for key, levels in group_members(members).items():
        first = next(iter(levels.values()))[0]
        table, histories = level_table(levels)
        higher = first.metrics.get("greater_is_better", True)
        metric = first.metrics.get("metric", "score")
        pick, reason = recommend(table, higher, metric)
        group = f"{first.config.model.kind} models ({len(levels)} complexities, spec {key})"
        out.append(Selection(group, table, histories, pick, reason, metric))
    return out
