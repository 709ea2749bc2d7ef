"""The saved ensemble (`make ensemble`'s ensemble.skops) as a teacher for members that learn from it: a distilled
student (`model=distill`) learns its predictions of the training rows, pseudo-labels (`pseudo_labels=`) are its
confident predictions of the test rows.

Both read it fold by fold: fold k's teacher is the ensemble over its members' fold-k models (which never saw fold k's
rows), its weights (or meta-learner) refitted on the other folds' OOF rows. So nothing that fold k's model learns
from the teacher carries fold k's labels, and its CV stays honest. (The members' OOF predictions would not do: the
OOF prediction of a row in fold j comes from a model trained on fold k, and a student that imitates those models
inherits their fit to fold k's labels: on adult its "CV" rose 0.006 AUC above the ensemble's.)
"""

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.artifacts import CompetitionInfo, ModelFolder, model_folder
from pipeline.ensembling.members import Context, Stack, add_features, load_context, load_stack
from pipeline.ensembling.saved import ENSEMBLE_FILE, load_ensemble, needed_members
from pipeline.errors import UserError
from pipeline.training.predictor import predict_folds


def teacher_digest(out_dir: Path) -> str:
    """A short hash of the saved ensemble: members learning from it carry it in their id (a new ensemble, new ids)."""
    path = Path(out_dir) / ENSEMBLE_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: a teacher is needed, run `make ensemble` for this competition first")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


@dataclass
class Teacher:
    """The saved ensemble, its members' OOF predictions (to refit its weights per fold) and the competition."""

    saved: dict
    ctx: Context
    stack: Stack

    @classmethod
    def load(cls, out_dir: Path, data) -> "Teacher":
        saved = load_ensemble(out_dir)
        ctx = load_context(out_dir, data)
        select = {"include": saved["members"], "exclude": [], "skip_invalid": False, "inner_folds": 5, "seed": 0}
        stack = load_stack(ctx, OmegaConf.create(select))
        numeric, categorical = getattr(saved["method"], "features", ([], []))  # stacking's passthrough, level 2's
        if numeric or categorical:
            add_features(stack, ctx)
        return cls(saved, ctx, stack)

    @property
    def folds(self) -> list[int]:
        return sorted(set(self.ctx.folds[self.ctx.validated].tolist()))

    def fold_method(self, k: int):
        """The ensemble fitted without fold k's OOF rows (a method that does not learn: as it is)."""
        method = copy.deepcopy(self.saved["method"])
        if method is None or not method.learns:
            return method
        if hasattr(method, "metric"):
            method.metric = self.ctx.metric  # the saved file drops it: it only chooses while fitting
        s, train = self.stack, self.ctx.folds[self.ctx.validated] != k
        X = None if s.X is None else s.X[train]
        return method.fit(s.oof[:, train], s.y[train], X, **({"folds": s.folds[train]} if method.needs_folds else {}))

    def combine(self, method, preds: dict[str, np.ndarray], X) -> np.ndarray:
        """The ensemble's (rows, columns) prediction from its needed members' (rows, columns) predictions."""
        if method is None:  # the best member, submitted as it is
            return preds[self.saved["name"]]
        shape = next(iter(preds.values())).shape
        P = np.stack([preds.get(m, np.zeros(shape)) for m in self.saved["members"]]).astype(np.float32)
        return method.predict(P, X)

    def folders(self) -> dict[str, ModelFolder]:
        return {m: model_folder(self.ctx.out_dir, m) for m in needed_members(self.saved)}


def teacher_fold_train(out_dir: Path, data, train: pd.DataFrame) -> dict[int, np.ndarray]:
    """Per fold k: (training rows, columns), fold k's teacher's predictions of the training rows (NaN on rows that
    are never validated, which have no OOF prediction to refit the ensemble's weights on)."""
    t = Teacher.load(out_dir, data)
    info, rows = CompetitionInfo.read(out_dir), train[t.ctx.validated].reset_index(drop=True)
    preds = {}
    for m, folder in t.folders().items():
        fold_models = [folder.read_fold_model(k) for k in t.folds]
        preds[m] = [p.reshape(len(rows), -1) for p in predict_folds(folder, info, rows, fold_models)]
    out = {}
    for i, k in enumerate(t.folds):
        pred = t.combine(t.fold_method(k), {m: p[i] for m, p in preds.items()}, t.stack.X)
        out[k] = np.full((len(train), pred.shape[1]), np.nan)
        out[k][t.ctx.validated] = pred
    return out


def teacher_fold_tests(out_dir: Path, data) -> dict[int, np.ndarray]:
    """Per fold k: (test rows, columns), fold k's teacher's predictions of the test rows (from the members' fold
    files: what each fold model predicted for them while training)."""
    t = Teacher.load(out_dir, data)
    folds_hash = t.ctx.info.folds_hash
    out = {}
    for k in t.folds:
        preds = {m: _fold_test(folder, k, folds_hash) for m, folder in t.folders().items()}
        out[k] = t.combine(t.fold_method(k), preds, t.stack.X_test)
    return out


def _fold_test(folder: ModelFolder, k: int, folds_hash: str) -> np.ndarray:
    res = folder.read_fold(k, folds_hash)
    if res is None:
        raise UserError(f"{folder.fold(k)} is missing or made on other folds: retrain {folder.name}")
    return res["test"].reshape(len(res["test"]), -1)
