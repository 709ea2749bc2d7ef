"""Hyperparameter search on Optuna (hydra-optuna-sweeper) as `search=<preset>` (conf/search/): the plugin runs
the study; the `Study` callback below fills in what it lacks.

- The study lives in `outputs/<name>/optuna.db` (sqlite), so a search killed half way continues when re-run.
- `hydra.sweeper.n_trials` counts trials in all: optuna 2.10's sweeper adds n_trials more on every re-run, so
  the trials already finished are subtracted (3 done of 6: 3 more); trials a killed sweep left running are
  marked failed.
- `direction: auto` maximizes or minimizes by the competition's metric (pipeline/metrics.py).
- Each trial trains an ordinary member; its model_id is kept as the trial's user attribute `model_id`, so the
  best k trials can be listed (`best_trials`).

python -m pipeline.train -m search=finetune hydra.sweeper.n_trials=12
python -m pipeline.search outputs/mnist 5     # [model_ids]: the trials beyond the best 5 of each study
"""

import logging
import sys
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.errors import user_errors

# optuna itself (~1-3 s to import) is imported where a sweep or a query needs it, not by every training job
log = logging.getLogger(__name__)
STORAGE_FILE = "optuna.db"


class TrialScore(float):
    """A job's CV score (what the sweeper optimizes) that also names the member it trained."""

    def __new__(cls, value: float, model_id: str | None = None):
        score = super().__new__(cls, value)
        score.model_id = model_id
        return score

    def __reduce__(self):  # Ray, joblib and submitit pickle job returns
        return TrialScore, (float(self), self.model_id)


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{(Path(out_dir) / STORAGE_FILE).resolve()}"


def _study(storage: str, name: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study yet
        return None


def finished_trials(storage: str, name: str) -> int:
    """Complete trials of the study (0 if it does not exist yet); trials still marked running were left by a
    killed sweep (one sweep per study at a time) and are marked failed, so that they do not count."""
    from optuna.trial import TrialState

    study = _study(storage, name)
    if study is None:
        return 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # optuna 2.10: only through storage
        study._storage.set_trial_state(t._trial_id, TrialState.FAIL)
        log.warning("study %s: trial %d was left running by a killed sweep: marked failed", name, t.number)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _is_study(config: DictConfig) -> bool:
    return "optuna" in str(config.hydra.sweeper.get("_target_", ""))


class Study(Callback):
    """Hydra callback of the search presets: sets up the study before the sweeper is built (in the launching
    process) and tags each trial with its member (in the job's process, wherever the launcher runs it)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not _is_study(config):
            return
        from pipeline.prepare import prepare

        with user_errors():
            prep = prepare(config)  # folds built once, before parallel jobs; the metric gives the direction
        sweeper = config.hydra.sweeper
        with open_dict(sweeper):
            sweeper.storage = sweeper.storage or storage_url(prep.out_dir)
            if sweeper.direction in (None, "auto"):
                sweeper.direction = "maximize" if prep.comp.metric.greater_is_better else "minimize"
            done = finished_trials(sweeper.storage, sweeper.study_name)
            total, sweeper.n_trials = sweeper.n_trials, max(0, sweeper.n_trials - done)
            if sweeper.sampler.get("seed") is not None:  # a resumed sampler would propose the first trials again
                sweeper.sampler.seed += done
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)  # the sweeper writes its summary there
        log.info(
            "study %s (%s, %s %s): %d of %d trials finished, %d to run",
            sweeper.study_name,
            sweeper.storage,
            sweeper.direction,
            prep.comp.metric.name,
            done,
            total,
            sweeper.n_trials,
        )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        model_id = getattr(job_return._return_value, "model_id", None)
        if job_return.status != JobStatus.COMPLETED or not model_id or not _is_study(config):
            return
        from optuna.trial import TrialState

        sweeper = config.hydra.sweeper
        study = _study(sweeper.storage or storage_url(config.paths.output_dir), sweeper.study_name)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if study else []:
            # this job's trial: the running one whose parameters this job's config holds
            if all(OmegaConf.select(config, k) == v for k, v in t.params.items()):
                study._storage.set_trial_user_attr(t._trial_id, "model_id", model_id)
                return


def best_trials(out_dir: Path, k: int) -> dict[str, list[str]]:
    """The model_ids of the best k complete trials of every study in outputs/<name>/optuna.db, best first."""
    import optuna
    from optuna.trial import TrialState

    if not (Path(out_dir) / STORAGE_FILE).is_file():
        return {}
    storage, best = storage_url(out_dir), {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "model_id" in t.user_attrs]
        trials.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
        best[summary.study_name] = list(dict.fromkeys(t.user_attrs["model_id"] for t in trials))[:k]
    return best


def beyond_best(out_dir: Path, k: int) -> list[str]:
    """The model_ids of the complete trials beyond the best k of each study (for `ensemble.exclude`); a model that
    is among the best k of one study stays."""
    keep = {m for ids in best_trials(out_dir, k).values() for m in ids}
    every = {m for ids in best_trials(out_dir, sys.maxsize).values() for m in ids}
    return sorted(every - keep)


if __name__ == "__main__":  # python -m pipeline.search outputs/<name> [k]: a list for ensemble.exclude
    print("[" + ",".join(beyond_best(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5)) + "]")
