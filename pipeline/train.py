"""Entry point: prepare the competition's data, then train one model spec over all folds.

python -m pipeline.train                                   # the default competition and model
python -m pipeline.train -m experiment=mnist               # its zoo (a Hydra multirun)
python -m pipeline.train data=csv data.train_csv=data/comp/train.csv data.target=label model=tabular
"""

import logging

import hydra
import torch
from omegaconf import DictConfig

from pipeline.errors import user_errors
from pipeline.prepare import prepare
from pipeline.training.job import train_job

log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        if cfg.get("threads"):
            torch.set_num_threads(cfg.threads)  # parallel jobs share the cores instead of oversubscribing
        log.info("preparing data: %s", cfg.name)
        prep = prepare(cfg)
        log.info(
            "training: model=%s finetune=%s head=%s seed=%s",
            cfg.model.kind,
            cfg.model.get("finetune"),
            cfg.model.head.type,
            cfg.seed,
        )
        metrics = train_job(cfg, prep)
        return metrics["cv_score"]  # the value an Optuna sweeper would optimize


if __name__ == "__main__":
    main()
