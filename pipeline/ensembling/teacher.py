"""The saved ensemble (`make ensemble`'s ensemble.skops) as a teacher for members that learn from it: a distilled
student (`model=distill`) learns its out-of-fold predictions, pseudo-labels (`pseudo_labels=`) are its confident
test predictions. Both read it fold by fold, so that no fold's validation rows are learned through it."""

import copy
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.artifacts import ModelFolder, model_folder, read_json
from pipeline.ensembling.members import add_features, load_context, load_stack
from pipeline.ensembling.saved import ENSEMBLE_FILE, apply_ensemble, load_ensemble, needed_members
from pipeline.ensembling.scoring import evaluate_method
from pipeline.errors import UserError


def teacher_digest(out_dir: Path) -> str:
    """A short hash of the saved ensemble: members learning from it carry it in their id (a new ensemble, new ids)."""
    path = Path(out_dir) / ENSEMBLE_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: a teacher is needed, run `make ensemble` for this competition first")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def teacher_oof(out_dir: Path, data) -> np.ndarray:
    """(training rows, columns) out-of-fold predictions of the saved ensemble, NaN on rows never validated. A method
    that learns (weighted, stacking, ...) is refitted without each fold to predict it (nested, as the ensemble stage
    scores it), so a row's prediction owes nothing to its own label."""
    saved = load_ensemble(out_dir)
    ctx = load_context(out_dir, data)
    select = {"include": saved["members"], "exclude": [], "skip_invalid": False, "inner_folds": 5, "seed": 0}
    stack = load_stack(ctx, OmegaConf.create(select))
    if saved["method"] is None:  # the best member, submitted as it is
        oof = stack.oof[stack.names.index(saved["name"])]
    else:
        method = copy.deepcopy(saved["method"])
        if hasattr(method, "metric"):
            method.metric = ctx.metric  # the saved file drops it: it only chooses while fitting
        if getattr(method, "features", None):
            add_features(stack, ctx)
        oof = evaluate_method(method, stack, ctx.metric).oof
    out = np.full((len(ctx.y), oof.shape[1]), np.nan)
    out[ctx.validated] = oof
    return out


def teacher_fold_tests(out_dir: Path, test: pd.DataFrame) -> dict[int, np.ndarray]:
    """Per fold k, the saved ensemble applied to its members' fold-k predictions of the test rows: models that never
    saw fold k's validation rows (`test`: the test rows, for a method that also reads their features)."""
    saved = load_ensemble(out_dir)
    folds_hash = read_json(Path(out_dir) / "folds.json")["folds_hash"]
    needed = set(needed_members(saved))
    folders = {m: model_folder(out_dir, m) for m in needed}
    out = {}
    for k in folders[next(iter(needed))].fold_ids():
        preds = {m: _fold_test(f, k, folds_hash) for m, f in folders.items()}
        shape = next(iter(preds.values())).shape
        P = np.stack([preds.get(m, np.zeros(shape)) for m in saved["members"]]).astype(np.float32)
        out[k] = apply_ensemble(saved, P, test.reset_index(drop=True))
    return out


def _fold_test(folder: ModelFolder, k: int, folds_hash: str) -> np.ndarray:
    res = folder.read_fold(k, folds_hash)
    if res is None:
        raise UserError(f"{folder.fold(k)} is missing or made on other folds: retrain {folder.name}")
    return res["test"].reshape(len(res["test"]), -1)
