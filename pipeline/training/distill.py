"""Distillation (`model=distill`): the saved ensemble distilled into one fast member, a LightGBM on the tabular
features that learns the ensemble's predictions (log-odds for classification) instead of the labels, for code
competitions with tight inference limits.

Its CV stays honest: fold k's student learns the other folds' rows as fold k's teacher predicts them (the ensemble
over its members' fold-k models, which never saw fold k: `teacher.teacher_fold_train`), stops early on that
teacher's predictions of fold k's rows (out of fold: no labels), and is scored on fold k's true labels. Its folder
is an ordinary member's (fold models in skops), so `make predict` and bundles use it.
"""

import logging
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from pipeline.choices import MULTI, TargetTransform, Task
from pipeline.errors import UserError
from pipeline.models.student import Student, soft_targets
from pipeline.training.estimators import EARLY_STOPPING, predict_sklearn, sklearn_estimator
from pipeline.training.fold_inputs import fit_tabular
from pipeline.training.targets import TARGET_TRANSFORMS, to_target
from pipeline.training.teacher import teacher_fold_train

log = logging.getLogger(__name__)
IDENTITY = TARGET_TRANSFORMS[TargetTransform.NONE][
    1
]  # the student learns the teacher's predictions in the target's units


def _regressor(cfg, threads: int):
    est = sklearn_estimator(cfg.model.head.estimator, Task.REGRESSION)  # LGBMClassifier -> LGBMRegressor
    if type(est).__module__.split(".")[0] != "lightgbm":
        raise UserError(f"model=distill: the student is a LightGBM, not {type(est).__name__}: keep the preset's")
    est.set_params(n_jobs=threads)
    return est


def fit_student(cfg, comp, targets: np.ndarray, rows: dict, threads: int) -> tuple[dict, dict]:
    """One fold's student: fitted on the teacher's targets of `rows["train"]`, early-stopped on those of
    `rows["val"]`; returns its result (as a fold's) and the state predict reads."""
    start = time.time()
    tab = fit_tabular(comp, cfg.data, rows["train"])
    if tab.fitted is None:
        raise UserError("model=distill needs tabular feature columns (data.feature_cols): this competition has none")
    x_train, x_val = tab.train[rows["train"]], tab.train[rows["val"]]
    regressors, rounds = [], []
    with threadpool_limits(limits=threads):
        for c in range(targets.shape[1]):
            est = _regressor(cfg, threads)
            stop = EARLY_STOPPING["lightgbm"][1](x_val, targets[rows["val"], c])
            est.fit(x_train, targets[rows["train"], c], **stop)
            est._evals_result = {}  # per-round scores: not needed to predict (as in estimators._fit)
            rounds.append(est.best_iteration_)
            regressors.append(est)
        student = Student(regressors, None if comp.task == Task.REGRESSION else len(comp.classes))
        y_range = (float(comp.y[rows["train"]].min()), float(comp.y[rows["train"]].max()))
        y_range = y_range if comp.task == Task.REGRESSION else None
        val = to_target(predict_sklearn(student, comp, x_val), y_range, IDENTITY)
        tick = time.time()
        test = to_target(predict_sklearn(student, comp, tab.test), y_range, IDENTITY)
    score = comp.metric(comp.y[rows["val"]], val)
    hist = [{"epoch": 0, "train_loss": float("nan"), "val_loss": float("nan"), "val_metric": score}]
    hist[0]["best_iteration"] = float(np.mean(rounds))
    res = {"val": val, "test": test, "history": hist, "epochs": 1, "best_epoch": 0}
    res |= {"seconds": time.time() - start, "test_seconds": time.time() - tick + tab.seconds}
    state = {"tab": tab.fitted, "in_dim": tab.dim, "estimator": student, "categorical": []}
    return res, state | {"y_scale": [0.0, 1.0], "y_range": y_range}


def check_distill(task: str) -> None:
    if task in MULTI:
        raise UserError(f"model=distill distills one target (classes or a value), not a {task} task")


def teacher_targets(prep, data) -> dict[int, np.ndarray]:
    """Per fold k: (training rows, targets) fold k's student learns, fold k's teacher's predictions as
    `soft_targets` (NaN rows: never validated, no teacher)."""
    regression = prep.comp.task == Task.REGRESSION
    teachers = teacher_fold_train(prep.out_dir, data, prep.comp.train)
    return {k: soft_targets(None, p[:, 0]) if regression else soft_targets(p) for k, p in teachers.items()}


def run_student(cfg, prep, folder, folds: list[tuple[int, dict]]) -> list[tuple[int, dict, dict]]:
    """Every fold's student (`folds`: (k, rows) as `job.fold_rows` gives them; finished folds reused, as
    `job.run_folds` does); returns (k, rows, result) per fold. LightGBM is seeded by its `random_state`."""
    targets, threads, out = None, torch.get_num_threads(), []  # the job's share of the cores (`threads`)
    for k, rows in folds:
        res = folder.read_fold(k, prep.folds_meta["folds_hash"])
        if res is None:
            targets = teacher_targets(prep, cfg.data) if targets is None else targets
            taught = {"train": rows["train"][np.isfinite(targets[k][rows["train"], 0])], "val": rows["val"]}
            res, state = fit_student(cfg, prep.comp, targets[k], taught, threads)
            folder.write_fold_model(k, state, None)
            folder.write_fold(k, res, prep.folds_meta["folds_hash"])  # last: marks the fold done
            log.info(
                "fold %d: student %s %.5f (%.0f s)",
                k,
                prep.comp.metric.name,
                res["history"][0]["val_metric"],
                res["seconds"],
            )
        out.append((k, rows, res))
    return out
