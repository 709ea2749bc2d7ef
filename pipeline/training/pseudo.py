"""Pseudo-labels that respect the folds (`pseudo_labels=<probability>`): the test rows to which the saved ensemble
gives a class with at least that probability join each fold's training rows, labelled with that class, and never its
validation rows, so the CV still scores only true labels.

Fold k's labels come from the ensemble over its members' fold-k models (`teacher.teacher_fold_tests`), which never
saw fold k's validation rows: averaged over the folds, the test predictions would carry those rows' labels into fold
k's training, and its CV would flatter the member.
"""

import logging

import numpy as np
import torch
from scipy import sparse

from pipeline.choices import BACKBONE_KINDS, MULTI, Task, is_frozen
from pipeline.errors import UserError
from pipeline.training.loaders import ArrayDataset
from pipeline.training.teacher import teacher_fold_tests

log = logging.getLogger(__name__)


def check_pseudo(cfg, task: str) -> float:
    """`pseudo_labels` as a probability, refused in one line before anything trains when it cannot be used."""
    value = cfg.pseudo_labels
    if task in (Task.REGRESSION, *MULTI):
        raise UserError(
            f"pseudo_labels needs a one-target classification task (its confidence is a class probability), not {task}:"
            " unset it"
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise UserError(f"pseudo_labels={value}: give a probability in (0, 1], e.g. pseudo_labels=0.95")
    if cfg.model.kind in BACKBONE_KINDS and not is_frozen(cfg.model):
        raise UserError("pseudo_labels: a finetuned backbone does not take them (members on features do): unset it")
    return float(value)


def pseudo_labels(cfg, prep) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per fold k: (test rows, their labels as class indices) that join fold k's training rows."""
    threshold = check_pseudo(cfg, prep.comp.task)
    out = {}
    for k, proba in teacher_fold_tests(prep.out_dir, cfg.data).items():
        rows = np.flatnonzero(proba.max(axis=1) >= threshold)
        out[k] = (rows, proba[rows].argmax(axis=1))
        log.info("fold %d: %d of %d test rows pseudo-labelled (p >= %g)", k, len(rows), len(proba), threshold)
    return out


def with_pseudo(datasets: dict, rows: np.ndarray, labels: np.ndarray) -> ArrayDataset:
    """The fold's training rows, then the test `rows` (as the fold's preprocessing made them) with `labels`."""
    train, test = datasets["train"], datasets["test"]
    if not isinstance(train, ArrayDataset):
        raise UserError(
            "pseudo_labels: only members on features (tabular, TF-IDF, frozen embeddings) take them, not a "
            "finetuned backbone: unset pseudo_labels for this model"
        )
    arrays = {}
    for key, a in train.arrays.items():
        extra = torch.as_tensor(labels).to(a.dtype) if key == "y" else test.arrays[key][rows]
        arrays[key] = sparse.vstack([a, extra], format="csr") if sparse.issparse(a) else torch.cat([a, extra])
    return ArrayDataset(arrays)
