"""Entry point: predict new rows with the trained members and the chosen ensemble; nothing is retrained.

python -m pipeline.predict data=adult predict.test_csv=new_rows.csv      # make predict ARGS="..."
python -m pipeline.predict name=adult predict.output=my_submission.csv
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from pipeline.cli import cli
from pipeline.errors import UserError, user_errors

if TYPE_CHECKING:  # the record's module loads pandas: imported when work starts, so `--help` answers at once
    from pipeline.artifacts import CompetitionInfo

log = logging.getLogger(__name__)


def needed_columns(info: CompetitionInfo) -> list[str]:
    texts = info.text_sources or [info.text_col]
    return [info.id_col, *info.feature_cols, *[c for c in (*texts, info.image_col) if c]]


def check_rows(test, info: CompetitionInfo, path: Path, image_dir: str | None, data) -> Path | None:
    """The new rows pass the checks training's test file passed, before any member reads them: the columns, ids,
    texts, images and numbers. Returns the folder of their images (`image_folder`), or None."""
    from pipeline.data.contract import (
        check_finite,
        check_ids,
        check_images,
        check_numeric,
        check_text,
        image_folder,
        join_texts,
    )
    from pipeline.data.dates import check_dates

    missing = [c for c in needed_columns(info) if c not in test.columns]
    if missing:
        raise UserError(f"{path} lacks column {missing[0]!r}, which the members read: give the test file's columns")
    check_ids(test, info.id_col, path)
    if info.text_col and not info.text_sources:
        check_text(test, info.text_col, path)
    if info.text_sources:
        empty = join_texts(test, info.text_sources).str.strip() == ""
        if empty.any():
            line = int(empty.to_numpy().nonzero()[0][0]) + 2
            raise UserError(f"{path} line {line}: no text in any of {', '.join(info.text_sources)}: give one")
    check_dates(test, info.datetime_cols, path)
    check_numeric(test, info.numeric_cols or [], path, info.train_csv)
    check_finite(test, info.feature_cols, path)
    folder = image_folder(info, data, image_dir)
    if folder is None:
        return None
    if not folder.is_dir():
        raise UserError(f"predict.image_dir={folder} is not a folder: give the folder of the images {path} names")
    outside = bool(data.get("allow_outside_image_dir", False))
    check_images(test, info.image_col, folder, path, outside, key="predict.image_dir")
    return folder


def submission(pred, ids, info: CompetitionInfo, sample_path: str | None, out_dir: Path, thresholds=None):
    """In the sample's format: its id order when it holds exactly these ids, else theirs in the file's order."""
    from pipeline.data.contract import read_csv
    from pipeline.ensembling.members import Format
    from pipeline.ensembling.submission import default_format, fill_sample, sample_for

    fmt = Format.of(info, thresholds)
    if not sample_path:
        return default_format(pred, ids, fmt)
    if not Path(sample_path).is_absolute() and (out_dir / sample_path).is_file():  # a bundle's own copy
        sample_path = str(out_dir / sample_path)
    sample = read_csv(sample_path, "predict.sample_submission")
    if set(sample[info.id_col].astype(str)) != set(ids.astype(str)) or len(sample) != len(ids):
        sample = sample_for(sample, ids, info.id_col)
    return fill_sample(sample, pred, ids, fmt, Path(sample_path))


def predict_rows(
    out_dir: Path, info: CompetitionInfo, saved: dict, test, image_dir: Path | None = None, progress: bool = True
):
    """The chosen ensemble's predictions of the `test` rows: every member's fold models, then the ensemble."""
    import numpy as np
    from tqdm import tqdm

    from pipeline.artifacts import model_folder
    from pipeline.ensembling.saved import apply_ensemble, needed_members
    from pipeline.training.predictor import predict_member

    members = tqdm(needed_members(saved), desc="members", unit="member", disable=not progress)
    shared = {}  # what several members compute alike for these rows, computed once (`test_dataset`)
    preds = {m: predict_member(model_folder(out_dir, m), info, test, image_dir, shared) for m in members}
    preds = {m: p.reshape(len(test), -1) for m, p in preds.items()}
    shape = next(iter(preds.values())).shape
    P = np.stack([preds.get(m, np.zeros(shape)) for m in saved["members"]])  # the others have no say: zeros
    return apply_ensemble(saved, P.astype(np.float32), test)


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # the stage's code (torch, the members' libraries) loads only when work starts: `--help` answers at once
    from pipeline.artifacts import COMPETITION, CompetitionInfo, model_folder, write_csv
    from pipeline.data.contract import read_csv
    from pipeline.ensembling.saved import load_ensemble, needed_members

    with user_errors():
        out_dir, p = Path(cfg.paths.output_dir), cfg.predict
        if not (out_dir / COMPETITION).is_file():
            raise UserError(f"{out_dir / COMPETITION} not found: train this competition first (make train)")
        info = CompetitionInfo.read(out_dir / COMPETITION)
        saved = load_ensemble(out_dir)
        test_csv = p.test_csv or info.test_csv
        numeric = info.numeric_cols  # the other columns read as text, as training read them (None: pandas guesses)
        as_text = [] if numeric is None else [c for c in needed_columns(info) if c not in numeric]
        test = read_csv(test_csv, "predict.test_csv", as_text)
        data = model_folder(out_dir, needed_members(saved)[0]).read_config().data  # alike in every member
        image_dir = check_rows(test, info, Path(test_csv), p.image_dir, data)
        pred = predict_rows(out_dir, info, saved, test, image_dir)
        sub = submission(
            pred,
            test[info.id_col].to_numpy(),
            info,
            p.sample_submission or info.sample_submission,
            out_dir,
            saved.get("thresholds"),
        )
        write_csv(sub, Path(p.output))
        print(f"predictions ({saved['name']}, {len(saved['members'])} members, {len(test)} rows): {p.output}")


def run() -> None:
    """`pipeline-predict`: the command line checked before Hydra creates its run folder."""
    cli(main, "predict")


if __name__ == "__main__":
    run()
