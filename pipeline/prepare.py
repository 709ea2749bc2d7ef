"""The data stage: validate the competition, infer its task, build (or reuse) the shared folds.

python -m pipeline.prepare data=csv data.train_csv=data/comp/train.csv data.target=label
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from pipeline.artifacts import COMPETITION, CompetitionInfo
from pipeline.choices import Task
from pipeline.cli import cli
from pipeline.data.contract import Competition, is_numeric, load_competition
from pipeline.data.folds import load_or_build_folds
from pipeline.errors import UserError, user_errors
from pipeline.guard import clean_temp_files, watch

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A validated competition with its folds and where its outputs go."""

    comp: Competition
    folds: np.ndarray  # the validation fold of each training row (-1: holdout rows that only train)
    folds_meta: dict
    out_dir: Path


def ensure_demo(data: DictConfig) -> None:
    """Build a demo competition's files (data.demo) when they are missing."""
    if not data.get("demo") or Path(data.train_csv).is_file():
        return
    from pipeline.data.demos import DemoError, export

    log.info("%s is missing: building the demo competition '%s'", data.train_csv, data.demo)
    try:
        export(data.demo, Path(data.train_csv).parent.parent)
    except DemoError as e:
        raise UserError(str(e)) from e


def competition_info(comp: Competition, meta: dict) -> CompetitionInfo:
    """What later stages need to read predictions back: task, metric, classes, columns, hashes."""
    return CompetitionInfo(
        task=comp.task,
        metric=comp.metric.saved,
        classes=comp.classes,
        id_col=comp.id_col,
        target=comp.target,
        train_csv=str(comp.train_path),
        test_csv=str(comp.test_path),
        n_train=len(comp.train),
        n_test=len(comp.test),
        data_hash=comp.data_hash,
        folds_hash=meta["folds_hash"],
        sample_submission=str(comp.sample_submission) if comp.sample_submission else None,
        feature_cols=comp.feature_cols,
        numeric_cols=[c for c in comp.feature_cols if is_numeric(comp.train[c])],  # new rows must keep them so
        image_col=comp.image_col,
        text_col=comp.text_col,
        datetime_cols=comp.datetime_cols,
        text_sources=comp.text_sources,
        label_sep=comp.label_sep,
    )


def prepare(cfg: DictConfig) -> Prepared:
    """Validate the data, build or reuse the folds, write competition.json; return it all."""
    ensure_demo(cfg.data)
    comp = load_competition(cfg.data)
    out_dir = Path(cfg.paths.output_dir)
    watch(out_dir)  # a user error from here on removes what this run wrote
    clean_temp_files(out_dir)  # of killed runs, when no other run of this competition is alive
    folds, meta = load_or_build_folds(cfg.cv, comp, out_dir)
    competition_info(comp, meta).write(out_dir / COMPETITION)
    counts = ""
    if comp.task == Task.MULTILABEL:
        counts = ", positives " + ", ".join(f"{c}: {n}" for c, n in zip(comp.classes, comp.y.sum(0), strict=True))
    elif comp.classes is not None and comp.task != Task.MULTIREGRESSION:
        counts = ", classes " + ", ".join(f"{c}: {n}" for c, n in zip(comp.classes, np.bincount(comp.y), strict=True))
    log.info(
        "data: %d train rows, %d test rows, %d tabular features%s%s; metric %s",
        len(comp.train),
        len(comp.test),
        len(comp.feature_cols),
        f", images in {comp.image_dir}" if comp.image_col else "",
        f", text column '{comp.text_col}'" if comp.text_col else "",
        comp.metric.name,
    )
    log.info("target '%s': %s%s", comp.target, comp.task, counts[:300])
    return Prepared(comp, folds, meta, out_dir)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        prep = prepare(cfg)
        log.info("prepared %s -> %s", cfg.name, prep.out_dir)


if __name__ == "__main__":
    cli(main, "train")
