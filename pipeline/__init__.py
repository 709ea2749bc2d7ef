"""Kaggle-style pipeline: prepare the data, train a zoo of models, ensemble them, submit."""

import os
from pathlib import Path

from omegaconf import OmegaConf

# Path helpers for configs, e.g. `test_csv: ${dirname:${data.train_csv}}/test.csv`
OmegaConf.register_new_resolver("dirname", os.path.dirname, replace=True)
OmegaConf.register_new_resolver("basename", os.path.basename, replace=True)

# The config groups: conf/ at the repository's root, linked as pipeline/conf so that the wheel carries a copy and
# the entry points find it both ways (Hydra: config_path="conf", relative to the package).
CONF_DIR = Path(__file__).resolve().parent / "conf"


def _device(key: str, accelerator: str = "auto"):
    from pipeline.training.devices import device_default  # torch loads only when a trainer key is read

    return device_default(key, accelerator)


# GPU defaults when a GPU is present, e.g. `precision: ${device:precision,${.accelerator}}` (conf/trainer/)
OmegaConf.register_new_resolver("device", _device, replace=True)
