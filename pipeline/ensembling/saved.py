"""The chosen ensemble as a file: the ensemble stage saves it (`ensemble.skops`), the predict stage applies it to
the members' predictions of new rows."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import dump_safe, load_safe
from pipeline.ensembling.members import _as_object
from pipeline.ensembling.methods import Method
from pipeline.errors import UserError

ENSEMBLE_FILE = "ensemble.skops"


def save_ensemble(
    out_dir: Path, name: str, method: Method | None, members: list[str], thresholds: list | None = None
) -> Path:
    """`method` refitted on every OOF row (None: the member `name` is submitted as it is) and the members it reads,
    in the order its inputs follow; multilabel: the per-label thresholds of a 0/1 submission."""
    if method is not None:
        method = copy.copy(method)
        if hasattr(method, "metric"):
            method.metric = None  # only chooses while fitting; scoring functions are not data to save
    return dump_safe(
        {"name": name, "method": method, "members": members if method else [name], "thresholds": thresholds},
        out_dir / ENSEMBLE_FILE,
    )


def load_ensemble(out_dir: Path) -> dict:
    path = Path(out_dir) / ENSEMBLE_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: run `make ensemble` for this competition first")
    return load_safe(path)


def needed_members(saved: dict) -> list[str]:
    """The members whose predictions the chosen ensemble depends on: predict computes and a bundle ships only
    these (a weighted ensemble's zero-weight members are left out)."""
    method = saved["method"]
    if method is None:
        return list(saved["members"])
    return [m for m, used in zip(saved["members"], method.reads(len(saved["members"])), strict=True) if used]


def apply_ensemble(saved: dict, P: np.ndarray, test: pd.DataFrame) -> np.ndarray:
    """(rows, columns) predictions from the members' (members, rows, columns) predictions of `test` (a member
    outside `needed_members` may hold anything: zeros)."""
    method = saved["method"]
    if method is None:
        return P[0]
    numeric, categorical = getattr(method, "features", ([], []))
    X = _as_object(test[numeric + categorical].reset_index(drop=True), categorical) if numeric or categorical else None
    return method.predict(P, X)
