"""Kaggle-style pipeline: prepare the data, train a zoo of models, ensemble them, submit."""

import os
from pathlib import Path

from omegaconf import OmegaConf

# Path helpers for configs, e.g. `test_csv: ${dirname:${data.train_csv}}/test.csv`
OmegaConf.register_new_resolver("dirname", os.path.dirname, replace=True)
OmegaConf.register_new_resolver("basename", os.path.basename, replace=True)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the config groups (Hydra: config_path="../conf")
