"""Cross-validation folds, built once per competition and shared by every model.

`folds.csv` holds (id, fold); `folds.json` beside it holds the hash of the training file and the CV settings
that built it, and the hash of `folds.csv` itself: an edited or replaced folds file stops the run, and folds are
matched to the training rows by id. A model or ensemble trained on other folds is never mixed with these: a
changed training file or changed settings stop the run until the user rebuilds on purpose (`cv.rebuild=true`).
"""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit, train_test_split

from pipeline.artifacts import read_json, write_csv, write_json
from pipeline.choices import REGRESSIONS, CVScheme, Task
from pipeline.data.contract import Competition, file_hash, show_value
from pipeline.data.dates import date_format, parse
from pipeline.errors import UserError

log = logging.getLogger(__name__)
SCHEMES = tuple(CVScheme)
HOLDOUT_TRAIN_ONLY = -1  # holdout and time: rows that only ever train carry this fold number


def resolve_scheme(cv, comp: Competition) -> str:
    """`auto` -> group when data.group_col is set, stratified for classification (iterative stratification for
    several labels), kfold for regression."""
    if cv.scheme not in SCHEMES:
        raise UserError(f"unknown cv.scheme '{cv.scheme}': choose one of {', '.join(SCHEMES)}")
    if cv.scheme != "auto":
        return cv.scheme
    if comp.group_col:
        return "group"
    return "kfold" if comp.task in REGRESSIONS else "stratified"


def _number(cv, key: str, kind: type):
    try:
        return kind(cv[key])
    except (TypeError, ValueError) as e:
        raise UserError(f"cv.{key}={cv[key]!r} must be a {kind.__name__} number") from e


def cv_settings(cv, comp: Competition) -> dict:
    """The settings that determine the folds (and nothing else)."""
    scheme = resolve_scheme(cv, comp)
    if scheme == "holdout":
        return {
            "scheme": scheme,
            "val_fraction": _number(cv, "val_fraction", float),
            "seed": _number(cv, "seed", int),
        }
    if scheme == "time":  # no seed: the order is the data's
        return {"scheme": scheme, "n_folds": _number(cv, "n_folds", int), "time_col": comp.time_col}
    return {"scheme": scheme, "n_folds": _number(cv, "n_folds", int), "seed": _number(cv, "seed", int)}


def _check_classes(settings: dict, comp: Competition) -> None:
    """Stratified and holdout splits need every class in every part."""
    scheme, counts = settings["scheme"], np.bincount(comp.y)
    label = show_value(comp.classes[int(counts.argmin())])
    if counts.min() < 2:
        raise UserError(
            f"class {label} has a single row: stratified folds need at least 2 per class; drop "
            "or relabel that row, or use cv.scheme=kfold"
        )
    if scheme == "holdout":
        n_val = int(np.ceil(settings["val_fraction"] * len(comp.y)))
        if n_val < len(comp.classes):
            raise UserError(
                f"cv.val_fraction={settings['val_fraction']} gives {n_val} validation rows, fewer "
                f"than the {len(comp.classes)} classes: raise cv.val_fraction"
            )
    elif counts.min() < settings["n_folds"]:
        raise UserError(
            f"cv.n_folds={settings['n_folds']} is larger than the smallest class ({label}: "
            f"{counts.min()} rows); use cv.n_folds={counts.min()} or fewer"
        )


def _check_groups(n: int, comp: Competition) -> None:
    if not comp.group_col:
        raise UserError("cv.scheme=group needs data.group_col=<column with the group of each row>")
    missing = comp.train[comp.group_col].isna()
    if missing.any():
        line = int(np.flatnonzero(missing)[0]) + 2
        raise UserError(
            f"{comp.train_path} line {line}: empty value in group column '{comp.group_col}' "
            "(data.group_col); every row needs a group"
        )
    groups = comp.train[comp.group_col].nunique()
    if groups < n:
        raise UserError(f"cv.n_folds={n} is larger than the {groups} groups in '{comp.group_col}'")


def time_values(comp: Competition) -> pd.Series:
    """data.time_col as numbers or UTC timestamps; a missing or unreadable value stops with its line."""
    col = comp.time_col
    if not col:
        raise UserError("cv.scheme=time needs data.time_col=<column whose numbers or dates order the rows>")
    values = comp.train[col]
    if not pd.api.types.is_numeric_dtype(values):
        fmt = date_format(values)
        if fmt is None:
            raise UserError(f"data.time_col '{col}' holds neither numbers nor dates: name a column that orders rows")
        values = parse(values, fmt)
    bad = values.isna().to_numpy()
    if bad.any():
        raise UserError(
            f"{comp.train_path} line {int(np.flatnonzero(bad)[0]) + 2}: time column '{col}' (data.time_col) is empty "
            "or not a date there; every row needs its time"
        )
    return values


def _check(settings: dict, comp: Competition) -> None:
    scheme, n = settings["scheme"], settings.get("n_folds", 2)
    if scheme == "holdout":
        f = settings["val_fraction"]
        if not 0 < f < 1:
            raise UserError(f"cv.val_fraction={f} must be between 0 and 1 (0.2-0.3 is the rule of thumb)")
        # outside 0.2-0.3 is the advisor's `holdout_fraction` finding (pipeline/advisor/rules.py)
    elif n < 2 or n > len(comp.y) - (scheme == "time"):
        raise UserError(f"cv.n_folds={n} must be between 2 and the number of training rows ({len(comp.y)})")
    if scheme == "stratified" and comp.task in REGRESSIONS:
        raise UserError("cv.scheme=stratified needs a classification target: use cv.scheme=kfold")
    if scheme in ("stratified", "holdout") and comp.task not in (*REGRESSIONS, Task.MULTILABEL):
        _check_classes(settings, comp)
    if scheme == "group":
        _check_groups(n, comp)


def assign_folds(settings: dict, comp: Competition) -> np.ndarray:
    """A fold number per training row: the fold in which the row is validated."""
    _check(settings, comp)
    scheme, rows = settings["scheme"], np.arange(len(comp.y))
    fold = np.full(len(rows), HOLDOUT_TRAIN_ONLY)
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit  # multilabel only

    if scheme == "holdout" and comp.task == Task.MULTILABEL:
        split = MultilabelStratifiedShuffleSplit(1, test_size=settings["val_fraction"], random_state=settings["seed"])
        fold[next(split.split(rows, comp.y))[1]] = 0
        return fold
    if scheme == "holdout":
        strat = comp.y if comp.task not in REGRESSIONS else None
        _, val = train_test_split(
            rows, test_size=settings["val_fraction"], random_state=settings["seed"], stratify=strat
        )
        fold[val] = 0
        return fold
    if scheme == "time":  # n + 1 blocks in time order; fold k validates block k + 1 after training on blocks <= k
        order = np.argsort(time_values(comp).to_numpy(), kind="stable")
        for k, (_, val) in enumerate(TimeSeriesSplit(settings["n_folds"]).split(order)):
            fold[order[val]] = k
        return fold
    n, seed = settings["n_folds"], settings["seed"]
    stratified = MultilabelStratifiedKFold if comp.task == Task.MULTILABEL else StratifiedKFold
    splitter = {
        "stratified": stratified(n, shuffle=True, random_state=seed),
        "kfold": KFold(n, shuffle=True, random_state=seed),
        "group": GroupKFold(n, shuffle=True, random_state=seed),
    }[scheme]
    groups = comp.train[comp.group_col] if scheme == "group" else None
    for k, (_, val) in enumerate(splitter.split(rows, comp.y, groups)):
        fold[val] = k
    return fold


def check_labels(fold: np.ndarray, comp: Competition, earlier: bool) -> None:
    """Multilabel: each fold's training rows and validation rows need each label positive: a model cannot learn a
    label it never sees, nor be scored on it. `earlier`: time-ordered folds train on the earlier folds only."""
    for k in sorted(set(fold.tolist()) - {HOLDOUT_TRAIN_ONLY}):
        train = (fold < k) if earlier else (fold != k)
        for part, rows in (("training", train), ("validation", fold == k)):
            never = np.flatnonzero(comp.y[rows].sum(0) == 0)
            if len(never):
                name, total = comp.classes[never[0]], int(comp.y[:, never[0]].sum())
                raise UserError(
                    f"label '{name}' is never positive in fold {k}'s {part} rows ({total} positive rows in all): "
                    "drop it from data.target, or use fewer folds (cv.n_folds)"
                )


def _meta(settings: dict, comp: Competition) -> dict:
    key = json.dumps({"data_hash": comp.data_hash, **settings}, sort_keys=True)
    return {
        "folds_hash": hashlib.sha256(key.encode()).hexdigest()[:16],
        "data_hash": comp.data_hash,
        "cv": settings,
        "n_rows": len(comp.y),
    }


def _stale(old: dict, new: dict) -> str | None:
    if old.get("data_hash") != new["data_hash"]:
        return f"the training file changed (hash {old.get('data_hash')} -> {new['data_hash']})"
    if old.get("cv") != new["cv"]:
        diff = [f"{k} {old['cv'].get(k)} -> {v}" for k, v in new["cv"].items() if old["cv"].get(k) != v]
        return f"the CV settings changed ({', '.join(diff)})"
    return None


REBUILD = "rebuild it with cv.rebuild=true (models trained on the old folds will be retrained)"


def check_folds_file(out_dir: Path) -> dict:
    """folds.json, after checking that folds.csv is the file it describes (its content hash)."""
    csv, meta_path = Path(out_dir) / "folds.csv", Path(out_dir) / "folds.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path} not found: run `make train` for this competition first")
    try:
        meta = read_json(meta_path)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_path} is not valid JSON (a truncated or edited file): {REBUILD}") from e
    if not isinstance(meta, dict) or not csv.is_file():
        raise UserError(f"{meta_path} has no matching {csv.name}: {REBUILD}")
    want = meta.get("csv_hash")
    if want and file_hash(csv) != want:
        raise UserError(
            f"{csv} was edited after it was built (hash {file_hash(csv)}, folds.json has {want}): {REBUILD}"
        )
    return meta


def _by_id(csv: Path, comp: Competition) -> np.ndarray:
    """The fold of each training row, matched by id (not by position)."""
    try:
        df = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{csv} is not a readable CSV: {REBUILD}") from e
    if list(df.columns) != [comp.id_col, "fold"] or df[comp.id_col].duplicated().any():
        raise UserError(f"{csv} does not hold one (id, fold) row per id: {REBUILD}")
    fold = pd.to_numeric(df["fold"], errors="coerce")
    by_id = pd.Series(fold.to_numpy(), index=df[comp.id_col].astype(str))
    found = by_id.reindex(comp.train[comp.id_col].astype(str))
    bad = found.isna() | (found % 1 != 0)
    if bad.any() or len(by_id) != len(found):
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2 if bad.any() else len(found) + 2
        raise UserError(
            f"{csv} does not match the training rows (train.csv line {line} has no integer fold): {REBUILD}"
        )
    return found.to_numpy(int)


def load_or_build_folds(cv, comp: Competition, out_dir: Path) -> tuple[np.ndarray, dict]:
    """Reuse `out_dir/folds.csv` when it matches the data and settings; build it when missing or rebuilt."""
    csv, meta_path = Path(out_dir) / "folds.csv", Path(out_dir) / "folds.json"
    settings = cv_settings(cv, comp)
    meta = _meta(settings, comp)
    if csv.is_file() and meta_path.is_file() and not cv.rebuild:
        old = check_folds_file(out_dir)
        why = _stale(old, meta)
        if why:
            raise UserError(
                f"{csv} was built for other data: {why}. Rebuild it with cv.rebuild=true (models "
                f"trained on the old folds will be retrained), or write elsewhere with name=<new name>"
            )
        folds = _by_id(csv, comp)
        if "csv_hash" not in old and not np.array_equal(folds, assign_folds(settings, comp)):  # written before hashes
            raise UserError(f"{csv} differs from the folds its settings give (edited?): {REBUILD}")
        log.info("folds: reusing %s (%s, hash %s)", csv, settings, meta["folds_hash"])
        return folds, old | meta
    fold = assign_folds(settings, comp)
    if comp.task == Task.MULTILABEL:
        check_labels(fold, comp, settings["scheme"] == CVScheme.TIME)
    write_csv(pd.DataFrame({comp.id_col: comp.train[comp.id_col], "fold": fold}), csv)
    meta["csv_hash"] = file_hash(csv)
    write_json(meta, meta_path)
    log.info("folds: wrote %s (%s, hash %s)", csv, settings, meta["folds_hash"])
    return fold, meta
