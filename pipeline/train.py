"""Entry point: prepare the competition's data, then train one model spec over all folds, or a planned zoo.

python -m pipeline.train -m experiment=auto data=csv data.train_csv=data/comp/train.csv data.target=label
python -m pipeline.train data=csv data.train_csv=data/comp/train.csv data.target=label   # one default model
python -m pipeline.train -m experiment=mnist               # a demo's hand-made zoo (a Hydra multirun)
"""

import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pipeline.cli import cli
from pipeline.errors import user_errors

log = logging.getLogger(__name__)


def job_threads(cfg: DictConfig) -> int | None:
    """Torch threads for this job: `threads`, or its launcher's share of the cores: the cores divided among
    parallel joblib jobs, the CPUs a Ray task reserves (Ray's default: 1), submitit's cpus_per_task."""
    if cfg.get("threads"):
        return int(cfg.threads)
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
    target = str(launcher.get("_target_", ""))
    if "ray_launcher" in target:
        return max(1, int(launcher.ray.remote.get("num_cpus") or 1))
    if "submitit" in target:
        return launcher.get("cpus_per_task")  # None: all the cores the job may use
    if "joblib" not in target:
        return None
    cores = os.cpu_count() or 1
    n_jobs = launcher.get("n_jobs") or -1
    n_jobs = cores if n_jobs < 0 else n_jobs  # joblib's -1 = one job per core
    return max(1, cores // n_jobs)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # the stage's code loads only when work starts: `--help` answers at once, bad data is refused before torch loads
    from pipeline.prepare import prepare

    with user_errors():
        log.info("preparing data: %s", cfg.name)
        prep = prepare(cfg)
        import torch

        from pipeline.search import TrialScore
        from pipeline.zoo.plan import Member, default_model
        from pipeline.zoo.run import compose_member, train_zoo

        threads = job_threads(cfg)
        if threads:
            torch.set_num_threads(threads)  # parallel jobs share the cores instead of oversubscribing them
            log.info("torch threads: %d", threads)
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        if cfg.zoo.auto:  # experiment=auto: members chosen from the competition's views, rows and budget
            members = train_zoo(cfg, prep, overrides, fit)
            scores = [m.cv_score for m in members if m.cv_score is not None]
            return max(scores, key=lambda s: s if prep.comp.metric.greater_is_better else -s) if scores else None
        if cfg.model.kind == "auto":  # no model= given: the modality's best single default
            name = default_model(prep.comp)
            log.info("model: %s (the default for this competition's data; model=<preset> picks another)", name)
            cfg = compose_member(overrides, Member([f"model={name}"], "", 0))
        metrics = fit(cfg, prep)
        return TrialScore(metrics["cv_score"], metrics["model_id"])  # what search=<preset> (Optuna) optimizes


def fit(cfg: DictConfig, prep) -> dict:
    """One model spec over all folds, checked against the rules of thumb before and after training."""
    from pipeline.advisor.rules import advise_after, advise_before
    from pipeline.artifacts import model_folder
    from pipeline.training.job import train_job

    advice = advise_before(cfg)  # warnings (errors with advisor.strict=true)
    log.info(
        "training: model=%s finetune=%s head=%s seed=%s",
        cfg.model.kind,
        cfg.model.get("finetune"),
        cfg.model.head.type,
        cfg.seed,
    )
    metrics = train_job(cfg, prep)
    advise_after(cfg, model_folder(prep.out_dir, metrics["model_id"]), advice)  # regularization vs the curves
    return metrics


def run() -> None:
    """`pipeline-train`: the command line checked before Hydra creates its run folder."""
    cli(main, "train")


if __name__ == "__main__":
    run()
