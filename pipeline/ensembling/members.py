"""Read what the training stage wrote and validate every member against the competition's folds.

A member is a model folder (its format: pipeline/artifacts.py), complete once `metrics.json` exists. Its
`oof.csv` must cover the rows of `folds.csv` in the same order, with the columns the competition's classes give,
and come from the same folds (`folds_hash`): members on other folds are never mixed in.
"""

import logging
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, ListConfig
from sklearn.model_selection import KFold, StratifiedKFold

from pipeline.artifacts import COMPETITION, MODELS, CompetitionInfo, ModelFolder, model_folders, read_json
from pipeline.choices import MULTI, REGRESSIONS, Task
from pipeline.data.contract import file_hash, target_matrix
from pipeline.data.folds import HOLDOUT_TRAIN_ONLY
from pipeline.data.tabular import split_columns
from pipeline.errors import UserError
from pipeline.metrics import Metric, get_metric
from pipeline.search import beyond_best

log = logging.getLogger(__name__)
PROBA_TOLERANCE = 1e-6  # float32 round-off written to CSV may overshoot [0, 1] by a few ulps


@dataclass
class Format:
    """What predictions are written from: competition.json and the metric (labels or probabilities)."""

    info: CompetitionInfo
    metric: Metric
    thresholds: list | None = field(default=None, kw_only=True)  # multilabel: P(label) >= these -> label 1

    @classmethod
    def of(cls, info: CompetitionInfo, thresholds: list | None = None) -> "Format":
        """The format competition.json's metric gives (predict: new rows, no training rows)."""
        return cls(info, get_metric(info.metric, info.task), thresholds=thresholds)

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def classes(self) -> list | None:
        return self.info.classes

    @property
    def id_col(self) -> str:
        return self.info.id_col

    @property
    def columns(self) -> list[str]:
        """Prediction columns: str(class) per class, or ["prediction"]."""
        return self.info.columns


@dataclass
class Context(Format):
    """The competition as the training stage left it: its `Format`, the folds and the encoded target."""

    out_dir: Path
    ids: np.ndarray  # folds.csv ids, in training-row order
    folds: np.ndarray  # the validation fold of each training row (-1: never validated)
    y: np.ndarray  # class indices or values, per training row
    test_csv: Path

    @property
    def validated(self) -> np.ndarray:
        """Mask of the rows with an out-of-fold prediction (holdout rows that only train have none)."""
        return self.folds != HOLDOUT_TRAIN_ONLY


@dataclass
class Stack:
    """The validated members' predictions, restricted to the rows that have out-of-fold predictions."""

    names: list[str]
    folders: list[Path]
    metrics: list[dict]  # each member's metrics.json
    oof: np.ndarray  # (members, validated rows, columns), float32
    test: np.ndarray  # (members, test rows, columns), float32
    y: np.ndarray  # target of the validated rows
    folds: np.ndarray  # the fold each validated row is scored in
    test_ids: np.ndarray
    test_y: np.ndarray | None  # encoded true test target when test_labels.csv exists (scoring only)
    X: pd.DataFrame | None = None  # tabular features of the validated rows (stacking passthrough)
    X_test: pd.DataFrame | None = None


class InvalidMember(Exception):
    """A member folder that does not fit the competition; the message is the reason."""


def _read_csv(path: Path, what: str, columns: tuple[str, ...] = (), as_text: list[str] | tuple = ()) -> pd.DataFrame:
    """`as_text`: columns read as the file writes them (`pipeline.data.contract.read_csv`)."""
    if not path.is_file():
        raise UserError(f"{path} not found: run `make train` for this competition first ({what})")
    df = pd.read_csv(path, dtype=dict.fromkeys(as_text, str))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} has no column {missing[0]!r} (columns: {', '.join(map(str, df.columns[:10]))})")
    return df


def same_ids(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal id sequences; compared as strings when the dtypes differ (CSV may read '7' as 7)."""
    if len(a) != len(b):
        return False
    if a.dtype.kind == b.dtype.kind:
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(a.astype(str), b.astype(str)))


def encode(frame: pd.DataFrame, info: CompetitionInfo, path: Path) -> np.ndarray:
    """Map the target column(s) of `frame` to class indices through competition.json's classes (or to floats;
    several targets: a (rows, targets) matrix)."""
    if info.task in MULTI:
        y = target_matrix(frame, info.target, info.label_sep, info.classes, path)
        return y.astype(int) if info.task == Task.MULTILABEL else y
    labels = frame[info.target]
    if info.classes is None:
        return pd.to_numeric(labels).to_numpy(float)
    index = {str(c): i for i, c in enumerate(info.classes)}
    codes = labels.astype(str).map(index)
    if codes.isna().any():
        bad = labels[codes.isna()].iloc[0]
        raise UserError(f"{path}: label {bad!r} is not one of the competition's classes {info.classes}")
    return codes.to_numpy(int)


def _train_target(info: CompetitionInfo, ids: np.ndarray) -> np.ndarray:
    """The encoded training target, checked to be the file the folds were built on."""
    path = Path(info.train_csv)
    train = _read_csv(path, "data.train_csv", (info.id_col, *info.target_cols))
    if file_hash(path) != info.data_hash:
        raise UserError(
            f"{path} changed since the models were trained (hash {file_hash(path)}, competition.json "
            f"has {info.data_hash}): rerun `make train`"
        )
    if not same_ids(train[info.id_col].to_numpy(), ids):
        raise UserError(f"{path} ids differ from folds.csv: rerun `make train` to rebuild the folds")
    return encode(train, info, path)


def load_context(out_dir: Path, data: DictConfig) -> Context:
    """Read competition.json, folds.csv/json and the training target from the training stage's outputs."""
    out_dir = Path(out_dir)
    comp_path = out_dir / COMPETITION
    if not comp_path.is_file():
        raise UserError(
            f"{comp_path} not found: run `make train` for this competition first "
            f"(or point paths.output_dir / name at the competition's outputs)"
        )
    info = CompetitionInfo.read(comp_path)
    folds_meta = read_json(out_dir / "folds.json") if (out_dir / "folds.json").is_file() else {}
    if folds_meta.get("folds_hash") != info.folds_hash:
        raise UserError(
            f"{out_dir / 'folds.json'} has folds_hash {folds_meta.get('folds_hash')} but "
            f"competition.json has {info.folds_hash}: rerun `make train` to rebuild them together"
        )
    folds = _read_csv(out_dir / "folds.csv", "folds.csv", (info.id_col, "fold"))
    ids = folds[info.id_col].to_numpy()
    return Context(
        info=info,
        metric=get_metric(info.metric, info.task),
        out_dir=out_dir,
        ids=ids,
        folds=folds["fold"].to_numpy(),
        y=_train_target(info, ids),
        test_csv=Path(info.test_csv or data.test_csv),
    )


def discover(out_dir: Path, include: list[str], exclude: list[str]) -> list[ModelFolder]:
    """The complete member folders whose names match `include` and not `exclude`."""
    folders = model_folders(out_dir, complete=False)
    if not folders:
        raise UserError(f"no model folder under {Path(out_dir) / MODELS}: train some models first (`make train`)")
    for pattern in include:
        if not any(fnmatch(f.name, pattern) for f in folders):
            log.warning("ensemble.include pattern '%s' matches no model folder in %s", pattern, out_dir)
    chosen = [
        f
        for f in folders
        if (not include or any(fnmatch(f.name, g) for g in include)) and not any(fnmatch(f.name, g) for g in exclude)
    ]
    for f in chosen:
        if not f.is_complete():
            log.info("skipping %s: no metrics.json (still training, or failed)", f.path)
    complete = [f for f in chosen if f.is_complete()]
    if not complete:
        raise UserError(
            f"no complete model under {Path(out_dir) / MODELS} matches ensemble.include={list(include)} "
            f"ensemble.exclude={list(exclude)}: train models first (`make train`)"
        )
    return complete


def _predictions(path: Path, ctx: Context, ids: np.ndarray | None, rows: np.ndarray | None) -> tuple:
    """Read oof.csv / test.csv: (ids, values) with the competition's columns, finite, probabilities in [0, 1].

    `ids`: the ids expected in this order (None: any); `rows`: the rows that must be finite (None: all).
    """
    if not path.is_file():
        raise InvalidMember(f"{path.name} is missing")
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InvalidMember(f"{path.name} is not a readable CSV ({str(e).splitlines()[0]})") from e
    expected = [ctx.id_col, *ctx.columns]
    if [str(c) for c in df.columns] != expected:
        raise InvalidMember(f"{path.name} has columns {list(df.columns)[:12]}, expected {expected[:12]}")
    got = df[ctx.id_col].to_numpy()
    if ids is not None and not same_ids(got, ids):
        if len(got) != len(ids):
            raise InvalidMember(f"{path.name} has {len(got)} rows, expected {len(ids)}")
        row = int(np.flatnonzero(got.astype(str) != ids.astype(str))[0])
        found, wanted = (np.asarray(v[row]).item() for v in (got, ids))  # plain 6, not np.int64(6)
        raise InvalidMember(
            f"{path.name} line {row + 2} has id {found!r} where {wanted!r} was expected "
            "(rows must follow folds.csv / test.csv order)"
        )
    try:
        values = df.iloc[:, 1:].to_numpy(np.float32)
    except ValueError as e:
        raise InvalidMember(f"{path.name} holds non-numeric predictions ({e})") from e
    checked = values if rows is None else values[rows]
    if not np.isfinite(checked).all():
        raise InvalidMember(f"{path.name} holds NaN or infinite predictions")
    if ctx.task not in REGRESSIONS and (checked.min() < -PROBA_TOLERANCE or checked.max() > 1 + PROBA_TOLERANCE):
        raise InvalidMember(
            f"{path.name} holds probabilities outside [0, 1] (min {checked.min():.4g}, max {checked.max():.4g})"
        )
    return got, values


def validate_member(folder: ModelFolder, ctx: Context, test_ids: np.ndarray | None) -> tuple[dict, np.ndarray, tuple]:
    """Validate one member folder: (metrics.json, OOF of the validated rows, (test ids, test values))."""
    try:
        metrics = folder.read_metrics()
    except ValueError as e:
        raise InvalidMember(f"metrics.json is not valid JSON ({e})") from e
    if metrics.get("folds_hash") != ctx.info.folds_hash:
        raise InvalidMember(
            f"it was trained on other folds (folds_hash {metrics.get('folds_hash')}, folds.csv has "
            f"{ctx.info.folds_hash}): retrain it, or leave it out with "
            f"ensemble.exclude=[{folder.name}]"
        )
    if metrics.get("task", ctx.task) != ctx.task:
        raise InvalidMember(f"its task is {metrics['task']}, the competition's is {ctx.task}")
    _, oof = _predictions(folder.oof, ctx, ctx.ids, ctx.validated)
    test = _predictions(folder.test, ctx, test_ids, None)
    if test_ids is None and len(test[0]) != ctx.info.n_test:
        raise InvalidMember(f"test.csv has {len(test[0])} rows, the competition has {ctx.info.n_test}")
    return metrics, oof[ctx.validated], test


def _eval_folds(folds: np.ndarray, y: np.ndarray, cfg: DictConfig, classify: bool) -> np.ndarray:
    """The folds to score in: the training folds, or inner splits when only one is validated (holdout)."""
    if len(np.unique(folds)) >= 2:
        return folds
    k = int(cfg.inner_folds)
    log.info("one validated fold (holdout): scoring members and methods over %d inner splits of its rows", k)
    splitter = (StratifiedKFold if classify else KFold)(k, shuffle=True, random_state=int(cfg.seed))
    inner = np.zeros(len(y), int)
    for i, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y)):
        inner[val] = i
    return inner


def _patterns(value: str | ListConfig | None) -> list[str]:
    """`ensemble.include=cnn*` arrives as a string, `ensemble.include=[cnn*,bert*]` as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _load_valid(ctx: Context, cfg: DictConfig) -> list[tuple]:
    """(folder, metrics.json, OOF, (test ids, test values)) per member that fits; refuse or skip others."""
    loaded, first_test_ids = [], None
    exclude = _patterns(cfg.exclude)
    if cfg.get("search_best_k"):  # the trials of a search beyond its best k leave the ensemble
        exclude += beyond_best(ctx.out_dir, int(cfg.search_best_k))
    for folder in discover(ctx.out_dir, _patterns(cfg.include), exclude):
        try:
            metrics, oof, (test_ids, test) = validate_member(folder, ctx, first_test_ids)
        except InvalidMember as e:
            if not cfg.skip_invalid:
                raise UserError(
                    f"model {folder.path} does not fit: {e} (or skip such models with ensemble.skip_invalid=true)"
                ) from e
            log.warning("skipping model %s: %s", folder.path, e)
            continue
        loaded.append((folder, metrics, oof, (test_ids, test)))
        first_test_ids = test_ids  # the later members' test rows must follow the same ids
    if not loaded:
        raise UserError(f"no valid model under {ctx.out_dir / 'models'}: each was skipped (see the warnings)")
    return loaded


def load_stack(ctx: Context, cfg: DictConfig) -> Stack:
    """Load and validate every selected complete member, stacked into arrays over the validated rows."""
    folders, metrics, oofs, tests = zip(*_load_valid(ctx, cfg), strict=True)
    names = [f.name for f in folders]
    log.info("members: %d (%s%s)", len(names), ", ".join(names[:8]), ", ..." if len(names) > 8 else "")
    test_ids = tests[0][0]
    y = ctx.y[ctx.validated]
    return Stack(
        names=names,
        folders=[f.path for f in folders],
        metrics=list(metrics),
        oof=_stacked(list(oofs), ctx),
        test=_stacked([t for _, t in tests], ctx),
        y=y,
        folds=_eval_folds(ctx.folds[ctx.validated], y, cfg, ctx.task in ("binary", "multiclass")),
        test_ids=test_ids,
        test_y=_test_labels(ctx, test_ids),
    )


def _stacked(arrays: list[np.ndarray], ctx: Context) -> np.ndarray:
    """(members, rows, columns) float32; probabilities clipped to [0, 1] (the tolerated round-off)."""
    out = np.stack(arrays)
    if ctx.task not in REGRESSIONS:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _test_labels(ctx: Context, test_ids: np.ndarray) -> np.ndarray | None:
    """The encoded true test target from test_labels.csv beside train.csv (demos only; never used to fit)."""
    path = Path(ctx.info.train_csv).parent / "test_labels.csv"
    if not path.is_file():
        return None
    labels = pd.read_csv(path)
    wanted = [ctx.id_col, *ctx.info.target_cols]
    if not set(wanted) <= set(labels.columns):
        log.warning("%s lacks one of the columns %s: no test scores", path, wanted)
        return None
    order = pd.Index(labels[ctx.id_col].astype(str)).get_indexer(pd.Index(test_ids.astype(str)))
    if (order < 0).any():
        log.warning("%s lacks %d of the test ids: no test scores", path, int((order < 0).sum()))
        return None
    return encode(labels.iloc[order].reset_index(drop=True), ctx.info, path)


def _as_object(df: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    # sklearn's imputers want categoricals as object columns with np.nan for missing
    for c in categorical:
        df[c] = df[c].astype(object).where(df[c].notna(), np.nan)
    return df


def add_features(stack: Stack, ctx: Context) -> tuple[list[str], list[str]]:
    """Attach the tabular features (train rows validated, test rows in test order) for stacking's passthrough.

    Returns the (numeric, categorical) feature columns; both empty when the competition has none.
    """
    cols = list(ctx.info.feature_cols)
    if not cols:
        log.warning("passthrough=true (stacking or level2) but the competition has no tabular features: ignored")
        return [], []
    train = _read_csv(Path(ctx.info.train_csv), "data.train_csv", tuple(cols))[cols]
    train = train[ctx.validated].reset_index(drop=True)
    numeric, categorical = split_columns(train, cols)
    test = _read_csv(ctx.test_csv, "data.test_csv", (ctx.id_col, *cols), as_text=categorical)  # as training did
    order = pd.Index(test[ctx.id_col].astype(str)).get_indexer(pd.Index(stack.test_ids.astype(str)))
    if (order < 0).any():
        raise UserError(
            f"{ctx.test_csv} lacks {int((order < 0).sum())} of the members' test ids: "
            "set data.test_csv to the competition's test file"
        )
    stack.X = _as_object(train[numeric + categorical], categorical)
    stack.X_test = _as_object(test[numeric + categorical].iloc[order].reset_index(drop=True), categorical)
    return numeric, categorical
