"""The budget left after the plan buys an Optuna search of 1-3 hyperparameters of the best gradient-boosting family.

Each trial is an ordinary zoo member (its own model folder, so the ensemble stage sees it like any other) whose
overrides are the family's best member's with the sampled values; its CV score is the objective. The spaces are
written as `conf/search/` writes them (hydra-optuna-sweeper's syntax, parsed by the plugin itself); the study is
in memory with a seeded sampler, so a rerun proposes the same trials and finds them complete.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from pipeline.zoo.plan import Member

if TYPE_CHECKING:
    from pipeline.zoo.run import Zoo

log = logging.getLogger(__name__)
EST = "model.head.estimator"
# Per preset: the capacity of a tree and how much it sees; the learning rate stays (early stopping picks the tree
# count for it). Each range brackets the preset's value, so the best member is itself a point of the space.
SPACES = {
    "tabular_lgbm": [
        f"{EST}.num_leaves=int(tag(log, interval(8, 128)))",  # preset 31
        f"{EST}.min_child_samples=int(tag(log, interval(5, 100)))",  # preset 20
        f"{EST}.colsample_bytree=interval(0.3, 1.0)",  # preset 0.7
    ],
    "tabular_xgb": [
        f"{EST}.max_depth=int(interval(3, 10))",  # preset 6
        f"{EST}.min_child_weight=tag(log, interval(0.5, 20.0))",  # preset 1
        f"{EST}.colsample_bytree=interval(0.3, 1.0)",  # preset 0.7 (the zoo's unbagged twin: 1.0)
    ],
    "tabular_catboost": [
        f"{EST}.depth=int(interval(4, 10))",  # preset 6
        f"{EST}.l2_leaf_reg=tag(log, interval(1.0, 30.0))",  # preset 3
    ],
    "tabular_hgb": [
        f"{EST}.max_leaf_nodes=int(tag(log, interval(8, 128)))",  # sklearn's default 31
        f"{EST}.min_samples_leaf=int(tag(log, interval(5, 100)))",  # sklearn's default 20
    ],
}
STARTUP = 5  # random trials before TPE models the space (optuna's default of 10 is most of a small search)


def _preset(m: Member) -> str | None:
    return next((o.split("=", 1)[1] for o in m.overrides if o.startswith("model=")), None)


def best_gbm(zoo: Zoo) -> Member | None:
    """The trained member of a searchable preset (SPACES) with the best CV, if any."""
    sign = 1 if zoo.prep.comp.metric.greater_is_better else -1
    gbms = [m for m in zoo.members if m.status == "trained" and m.cv_score is not None and _preset(m) in SPACES]
    return max(gbms, key=lambda m: sign * m.cv_score, default=None)


def _study(zoo: Zoo, base: Member, space: dict):
    """A seeded TPE study that already knows the base member: its values of the space and its CV."""
    import optuna

    direction = "maximize" if zoo.prep.comp.metric.greater_is_better else "minimize"
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=STARTUP)
    study = optuna.create_study(direction=direction, sampler=sampler)
    cfg = zoo.compose(base)
    params = {k: OmegaConf.select(cfg, k) for k in space}
    try:
        with warnings.catch_warnings():  # optuna 2.10 calls these "experimental" and warns of the ints' `step`
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            base_trial = optuna.trial.create_trial(
                params=params, distributions=space, value=base.cv_score, user_attrs={"model_id": base.model_id}
            )
            study.add_trial(base_trial)
    except ValueError as e:  # a value outside the space (a user's override): the search starts without it
        log.info("zoo search: %s is no point of the space (%s): not told to the study", " ".join(base.overrides), e)
    return study


def _value(v):
    return v if isinstance(v, int) else float(f"{v:.3g}")  # 3 digits: readable overrides and model configs


def tune(zoo: Zoo, trials: int) -> str:
    """Up to `trials` Optuna trials on the best gradient-boosting member's family while the budget lasts; returns
    how the search ended (`budget: ...` when the next trial would have overrun it)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.trial import TrialState

    base = best_gbm(zoo) if trials > 0 else None
    if base is None:
        return "off (zoo.search_trials=0)" if trials <= 0 else "no gradient-boosting member trained"
    with warnings.catch_warnings():  # optuna 2.10 warns of the `step` the plugin gives its int distributions
        warnings.simplefilter("ignore", FutureWarning)
        space, _ = create_params_from_overrides(SPACES[_preset(base)])
    study = _study(zoo, base, space)
    kept = [o for o in base.overrides if o.split("=", 1)[0] not in space]
    family = " ".join(o for o in kept if not o.startswith("seed="))
    record = zoo.doc["search"] = {"family": family, "space": SPACES[_preset(base)], "trials": 0, "max_trials": trials}
    for n in range(1, trials + 1):
        trial = study.ask(space)
        params = {k: _value(v) for k, v in trial.params.items()}
        values = ", ".join(f"{k.rsplit('.', 1)[1]}={v}" for k, v in params.items())
        why = f"Optuna trial {n}/{trials} of {family}: {values}"
        m = Member([*kept, *(f"{k}={v}" for k, v in params.items())], why, base.cost, 3, base.shared)
        if over := zoo.overrun(m):
            study.tell(trial, state=TrialState.FAIL)
            return f"budget: {why}: {over}"
        zoo.run(m)
        trial.set_user_attr("model_id", m.model_id)  # as pipeline/search.py tags its trials
        study.tell(trial, m.cv_score, state=TrialState.COMPLETE if m.cv_score is not None else TrialState.FAIL)
        record["trials"] = n
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = study.best_trial
            params = {k: _value(v) for k, v in best.params.items()}
            record["best"] = {"model_id": best.user_attrs["model_id"], "cv_score": best.value, "params": params}
        zoo.save()
    return f"{trials} trials of {family}" + (f", best CV {record['best']['cv_score']:.5g}" if "best" in record else "")
