"""Refit-full (AutoGluon's `refit_full`): after the folds, one model of the same spec is fitted on every training row,
at the size its fold models agreed on (the mean of the boosting rounds early stopping kept, or of a network's best
epoch), and it alone predicts the test rows, in place of the fold models' average. The OOF predictions, and so the
CV, stay the fold models': the refit model has no unseen row to be scored on.

Why: each fold model saw 80 % of the rows (5 folds); the refit sees all of them, at the size that was best on held
out rows. Whether that beats averaging 5 models is an empirical question: docs/benchmarks.md#refit-full.
"""

import copy
import logging
import time

import numpy as np
from omegaconf import open_dict

from pipeline.artifacts import ModelFolder
from pipeline.choices import MULTI, HeadType
from pipeline.errors import UserError
from pipeline.training.estimators import EARLY_STOPPING, estimator_spec, estimator_target

log = logging.getLogger(__name__)

# Per library: the parameter that sets a boosted model's size, and the settings that turn its early stopping off
# (the refit has no validation rows to stop on: it trains exactly the size given).
SIZE = {
    "lightgbm": ("n_estimators", {"early_stopping_round": 0}),
    "xgboost": ("n_estimators", {"early_stopping_rounds": None}),
    "catboost": ("iterations", {"early_stopping_rounds": None}),
    "sklearn": ("max_iter", {"early_stopping": False}),  # HistGradientBoosting
}


def fold_size(res: dict, head_type: str) -> int | None:
    """A fold model's size: the boosting rounds early stopping kept, or a network's epochs up to its best one."""
    if head_type == HeadType.SKLEARN:
        return res["history"][0].get("best_iteration") if res["history"] else None
    return int(res["best_epoch"]) + 1  # epochs count from 0


def check_refit(cfg, task: str) -> None:
    """Refuse, before any fold trains, a member whose fold models have no size to agree on."""
    if cfg.model.get("distill", False) or cfg.get("pseudo_labels") is not None:
        raise UserError("model.refit_full=true is for members on the labels, not model=distill or pseudo_labels")
    if task in MULTI:
        raise UserError(f"model.refit_full=true is for one target, not a {task} task: set model.refit_full=false")
    if cfg.model.head.type != HeadType.SKLEARN:
        return
    node = estimator_spec(cfg.model.head, task)
    library_class = estimator_target(str(node._target_), task)
    library = library_class.split(".")[0]
    if library not in SIZE or not node.get(EARLY_STOPPING[library][0]):
        raise UserError(
            f"model.refit_full=true needs fold models with a size to agree on (early-stopped LightGBM, XGBoost, "
            f"CatBoost, HistGradientBoosting, or a torch head), not {library_class}: set model.refit_full=false"
        )


def refit_size(cfg, results: list) -> int:
    """The fold models' mean size."""
    return max(1, int(round(float(np.mean([fold_size(res, cfg.model.head.type) for _, _, res in results])))))


def sized(cfg, task: str, size: int):
    """A copy of `cfg` that trains exactly `size` rounds (or epochs), without early stopping."""
    cfg = copy.deepcopy(cfg)
    if cfg.model.head.type != HeadType.SKLEARN:
        with open_dict(cfg.trainer):
            cfg.trainer.max_epochs, cfg.trainer.early_stopping = size, False
        return cfg
    node = estimator_spec(cfg.model.head, task)  # the node itself: updating it updates cfg
    key, off = SIZE[estimator_target(str(node._target_), task).split(".")[0]]
    with open_dict(node):
        node.update({key: size, **off})
    return cfg


def refit_full(cfg, prep, folder: ModelFolder, results: list, fit_rows) -> tuple[np.ndarray, dict]:
    """Fit the member on every training row at its folds' mean size; save it as the folder's refit model and
    return its test predictions (in the target's units) and what metrics.json records of it.

    `fit_rows(cfg, rows)` fits one model on `rows` and returns its result and saved state as `run_folds` does.
    """
    size = refit_size(cfg, results)
    start = time.time()
    all_rows = np.arange(len(prep.comp.y))
    # every row trains; the validation rows are the training rows too: only a score (and for a torch head the
    # checkpoint, the best by that score: the last epochs') depends on them, nothing stops early on them
    res, state, weights = fit_rows(sized(cfg, prep.comp.task, size), {"train": all_rows, "val": all_rows})
    folder.write_refit_model(state, weights)
    unit = "rounds" if cfg.model.head.type == HeadType.SKLEARN else "epochs"
    seconds = time.time() - start
    log.info("refit on all %d rows: %d %s (the folds' mean), %.0f s", len(all_rows), size, unit, seconds)
    return res["test"], {"size": size, "unit": unit, "rows": len(all_rows), "seconds": seconds}
