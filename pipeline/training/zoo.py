"""The zoo's summary: every trained member of a competition with its CV score."""

import json
import logging
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def member_table(out_dir: Path) -> pd.DataFrame:
    """One row per complete model under out_dir/models (best CV first)."""
    rows = []
    for f in sorted(Path(out_dir).glob("models/*/metrics.json")):
        m = json.loads(f.read_text())
        rows.append(
            {
                "model_id": m["model_id"],
                m["metric"]: m["cv_score"],
                "fold_mean": m["cv_mean"],
                "fold_std": m["cv_std"],
                "epochs": sum(m["epochs"]),
                "seconds": round(m["seconds"], 1),
                "_asc": not m.get("greater_is_better", True),
            }
        )
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    metric = df.columns[1]
    df = df.sort_values(metric, ascending=bool(df["_asc"].iloc[0])).drop(columns="_asc")
    return df.reset_index(drop=True)


class MemberTable(Callback):
    """Hydra callback: print the member table after a single run and after a whole multirun."""

    def _print(self, config: DictConfig) -> None:
        try:
            out_dir = Path(config.paths.output_dir)
        except Exception:  # the config may not resolve (e.g. a run that failed on its input)
            return
        table = member_table(out_dir)
        if not table.empty:
            print(f"\nmembers of {out_dir} ({len(table)}):\n{table.to_string(float_format=lambda v: f'{v:.5f}')}")

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        self._print(config)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._print(config)
