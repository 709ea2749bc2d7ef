"""The competition data contract: read train/test CSVs, validate them, infer the task, encode labels."""

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from pipeline.artifacts import CompetitionInfo
from pipeline.choices import MULTI, Task
from pipeline.data.dates import check_dates, datetime_columns
from pipeline.errors import UserError
from pipeline.metrics import Metric, get_metric

log = logging.getLogger(__name__)
TASKS = tuple(Task)
MAX_INT_CLASSES = 20  # an integer target with at most this many distinct values is a class label


@dataclass
class Competition:
    """A validated competition: both tables, the encoded target and what every column is for."""

    train: pd.DataFrame | None  # None when predicting new rows (`for_predict`): no training rows are read
    test: pd.DataFrame
    y: np.ndarray | None  # class indices (int) or regression values (float); None as `train`
    task: str
    metric: Metric
    classes: list | None  # original labels; classes[i] is encoded as i; several targets: their names (y's columns)
    id_col: str
    target: str | list[str]  # several columns: multilabel or multiregression
    feature_cols: list[str]
    image_col: str | None = None
    image_dir: Path | None = None
    text_col: str | None = None
    group_col: str | None = None
    time_col: str | None = None
    data_hash: str = ""
    train_path: Path | None = None
    test_path: Path | None = None
    sample_submission: Path | None = None
    notes: list[str] = field(default_factory=list)
    datetime_cols: dict[str, str] = field(default_factory=dict)  # date feature columns: {column: format}
    text_sources: list[str] = field(default_factory=list)  # several text columns: `text_col` joins them
    label_sep: str | None = None  # multilabel from one column of delimited labels

    @property
    def text_cols(self) -> list[str]:
        """The text columns as the data holds them (none, `text_col`, or the columns it joins)."""
        return self.text_sources or ([self.text_col] if self.text_col else [])

    @classmethod
    def for_predict(cls, info: CompetitionInfo, rows: pd.DataFrame, image_dir: Path | None) -> "Competition":
        """The trained competition (competition.json) with new `rows` to predict as its test rows."""
        if info.text_sources:
            rows = rows.assign(**{info.text_col: join_texts(rows, info.text_sources)})
        return cls(
            train=None,
            test=rows,
            y=None,
            task=info.task,
            metric=get_metric(info.metric, info.task),
            classes=info.classes,
            id_col=info.id_col,
            target=info.target,
            feature_cols=list(info.feature_cols),
            image_col=info.image_col,
            image_dir=image_dir,
            text_col=info.text_col,
            datetime_cols=dict(info.datetime_cols),
            text_sources=list(info.text_sources),
            label_sep=info.label_sep,
        )


def read_csv(path: str | Path, key: str, as_text: list[str] | tuple = ()) -> pd.DataFrame:
    """Read a CSV with a clear error for a missing, empty or unparsable file; `key` is the setting that names it.

    `as_text`: columns kept as the file writes them, never parsed as numbers: the columns that are text in the
    training file (categories, texts, paths, ids). Otherwise a test file whose `ticket` column happens to hold only
    digits (a single row, say) would read `113803` where training read the category `'113803'`, unseen."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key} file not found: {path} (set {key}=<path to the CSV>)")
    try:
        df = pd.read_csv(path, dtype=dict.fromkeys(as_text, str))
    except pd.errors.EmptyDataError as e:
        raise UserError(f"{path} is empty: it needs a header line and at least one row") from e
    except UnicodeDecodeError as e:
        raise UserError(not_utf8(path)) from e
    except pd.errors.ParserError as e:
        raise UserError(f"{path} is not a readable CSV: {str(e).splitlines()[0]}") from e
    if df.empty:
        raise UserError(f"{path} has a header but no rows")
    return df


def not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: its line and byte, and how to convert it."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return (
            f"{path} line {line}: byte 0x{data[e.start]:02x} is not UTF-8; save the file as UTF-8 "
            f"(e.g. iconv -f latin1 -t utf-8 {Path(path).name} > fixed.csv)"
        )
    return f"{path} is not UTF-8 text: save it as UTF-8"


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits): the identity of the training data."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def show_value(value) -> str:
    """A value as the user wrote it (numpy scalars shown as plain numbers)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _line(df: pd.DataFrame, mask: pd.Series | np.ndarray) -> int:
    """The 1-based line in the CSV (header = line 1) of the first row where `mask` holds."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2


def check_ids(df: pd.DataFrame, id_col: str, path: Path) -> None:
    """The id column must exist, be complete and unique."""
    if id_col not in df.columns:
        raise UserError(
            f"{path} has no id column '{id_col}' (columns: {', '.join(map(str, df.columns[:10]))}); "
            "set data.id_col=<column>"
        )
    ids = df[id_col]
    if ids.isna().any():
        raise UserError(f"{path} line {_line(df, ids.isna())}: empty id in column '{id_col}'")
    dup = ids.duplicated()
    if dup.any():
        raise UserError(
            f"{path} line {_line(df, dup)}: duplicated id {show_value(ids[dup].iloc[0])} in column '{id_col}'; "
            "ids must be unique"
        )


def infer_task(y: pd.Series, task: str) -> tuple[str, str]:
    """Return (task, the rule that decided it). Strings/bools/few integers -> classes, floats -> regression."""
    if task not in TASKS:
        raise UserError(f"unknown data.task '{task}': choose one of {', '.join(TASKS)}")
    n = y.nunique()
    if task != "auto":
        return task, f"data.task={task} (given)"
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        rule = "non-numeric target"
    elif pd.api.types.is_integer_dtype(y) and n <= MAX_INT_CLASSES:
        rule = f"integer target with {n} <= {MAX_INT_CLASSES} distinct values"
    else:
        if pd.api.types.is_integer_dtype(y):
            log.warning(
                "target '%s' holds integers with %d distinct values (> %d): treated as a regression target; set "
                "data.task=multiclass if they are class labels",
                y.name,
                n,
                MAX_INT_CLASSES,
            )
        return "regression", f"numeric target with {n} distinct values (dtype {y.dtype})"
    return ("binary" if n == 2 else "multiclass"), f"{rule}, {n} classes"


def encode_target(y: pd.Series, task: str, path: Path, target: str, positive: object = None):
    """Map class labels of any type to 0..K-1 (sorted; `positive` last for binary), or parse numbers."""
    if task == "regression":
        values = pd.to_numeric(y, errors="coerce")
        bad = values.isna()
        if bad.any():
            raise UserError(
                f"{path} line {_line(y, bad)}: target '{target}' holds {show_value(y[bad].iloc[0])}, not a number; "
                "a regression target must be numeric (or set data.task=binary/multiclass)"
            )
        inf = ~np.isfinite(values.to_numpy(float))
        if inf.any():
            raise UserError(
                f"{path} line {_line(y, inf)}: target '{target}' holds {show_value(values[inf].iloc[0])}; "
                "a regression target must be finite: drop or fix that row"
            )
        return values.to_numpy(float), None
    classes = sorted(y.unique().tolist())
    if len(classes) < 2:
        raise UserError(
            f"{path}: target '{target}' has a single class {show_value(classes[0])}; a classifier needs at least two"
        )
    if task == "binary" and len(classes) != 2:
        raise UserError(f"data.task=binary but target '{target}' has {len(classes)} classes; use data.task=multiclass")
    if positive is not None:
        match = [c for c in classes if str(c) == str(positive)]
        if task != "binary" or not match:
            raise UserError(f"data.positive_class={positive!r} is not one of the binary classes {classes}")
        classes = [c for c in classes if c != match[0]] + match
    index = {c: i for i, c in enumerate(classes)}
    return y.map(index).to_numpy(int), classes


def _multi_task(frame: pd.DataFrame, targets: list[str], task: str, path: Path) -> tuple[str, str]:
    """Several target columns: 0/1 labels in every one -> multilabel, numbers -> multiregression."""
    for t in targets:
        if not is_numeric(frame[t]):
            bad = pd.to_numeric(frame[t], errors="coerce").isna()
            raise UserError(
                f"{path} line {_line(frame, bad)}: target '{t}' holds {show_value(frame[t][bad].iloc[0])}; several "
                "target columns must hold 0/1 labels (multilabel) or numbers (multiregression)"
            )
    if task not in (Task.AUTO, *MULTI):
        raise UserError(f"data.task={task} takes one target column, not {len(targets)}: use data.task=auto")
    binary = all(set(np.unique(frame[t].astype(float))) <= {0.0, 1.0} for t in targets)
    if task == Task.AUTO:
        task = Task.MULTILABEL if binary else Task.MULTIREGRESSION
        return task, f"{len(targets)} target columns of {'0/1 labels' if binary else 'numbers'}"
    if task == Task.MULTILABEL and not binary:
        raise UserError(f"data.task=multilabel needs 0/1 values in every target column of {path}: {targets}")
    return task, f"data.task={task} (given)"


def _label_sets(col: pd.Series, sep: str) -> pd.Series:
    return col.fillna("").astype(str).map(lambda v: {p.strip() for p in v.split(sep)} - {""})


def target_matrix(frame: pd.DataFrame, target, label_sep: str | None, classes: list | None, path: Path) -> np.ndarray:
    """Several targets as a (rows, targets) matrix: the columns of `target`, or the labels of one column split at
    `label_sep` as 0/1 columns in `classes` order."""
    if not label_sep:
        return frame[list(target)].to_numpy(float)
    sets, names = _label_sets(frame[target], label_sep), [str(c) for c in classes]
    unknown = sorted(set().union(*sets) - set(names))
    if unknown:
        raise UserError(f"{path}: label {unknown[0]!r} in '{target}' is not one of the trained labels {names}")
    return np.array([[n in s for n in names] for s in sets], dtype=float).reshape(len(sets), len(names))


def _multi_target(cfg, train: pd.DataFrame, path: Path) -> tuple[str, np.ndarray, list[str]]:
    """(task, y as (rows, targets), target names) for `data.target=[a,b,...]` or one column + `data.label_sep`."""
    targets, sep = text_columns(cfg.target), cfg.get("label_sep")
    if sep and len(targets) > 1:
        raise UserError("data.label_sep splits one target column: give data.target=<column>, not a list")
    if sep:
        if cfg.task not in (Task.AUTO, Task.MULTILABEL):
            raise UserError(f"data.label_sep makes a multilabel task, not data.task={cfg.task}: use data.task=auto")
        names = sorted(set().union(*_label_sets(train[targets[0]], sep)))
        y = target_matrix(train, targets[0], sep, names, path)
        rule = f"'{targets[0]}' split at {sep!r} into {len(names)} labels"
        task = Task.MULTILABEL
    else:
        task, rule = _multi_task(train, targets, cfg.task, path)
        y, names = target_matrix(train, targets, None, None, path), targets
    if task == Task.MULTILABEL:
        for name, col in zip(names, y.T, strict=True):
            if col.min() == col.max():
                raise UserError(
                    f"{path}: label '{name}' is {int(col[0])} in every row; a label needs positive and negative rows "
                    "(drop it from data.target)"
                )
        y = y.astype(int)
    log.info("task: %s (%s)", task, rule)
    return str(task), y, [str(n) for n in names]


def check_images(
    df: pd.DataFrame, col: str, image_dir: Path, path: Path, outside: bool = False, key: str = "data.image_dir"
) -> None:
    """Every image path must name a readable image under `image_dir` (headers only: cheap).

    Absolute paths and paths through '..' are refused unless `outside` (data.allow_outside_image_dir=true): a
    competition's table should not make the pipeline read files elsewhere on the machine.
    """
    if col not in df.columns:
        raise UserError(f"{path} has no image column '{col}'; set data.image_col=<column> or data.image_col=null")
    for i, name in enumerate(df[col]):
        if not outside and isinstance(name, str) and (Path(name).is_absolute() or ".." in Path(name).parts):
            raise UserError(
                f"{path} line {i + 2}: image path {name!r} leaves {key} ({image_dir}); give paths "
                "relative to it, or set data.allow_outside_image_dir=true to read it anyway"
            )
        file = image_dir / str(name)
        if not isinstance(name, str) or not file.is_file():
            raise UserError(
                f"{path} line {i + 2}: image {name!r} not found under {image_dir} "
                f"(set {key} to the folder the paths are relative to)"
            )
        try:
            with Image.open(file) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise UserError(f"{path} line {i + 2}: {file} is not a readable image ({e})") from e


def image_folder(info: CompetitionInfo, data, given: str | Path | None = None) -> Path | None:
    """Where a trained competition's rows' images are: `given` (predict.image_dir), else training's data.image_dir,
    else the training file's folder (as `load_competition`); None without an image column."""
    if not info.image_col:
        return None
    return Path(given or data.get("image_dir") or Path(info.train_csv).parent)


def check_text(df: pd.DataFrame, col: str, path: Path) -> None:
    """The text column must hold non-empty strings."""
    if col not in df.columns:
        raise UserError(f"{path} has no text column '{col}'; set data.text_col=<column> or data.text_col=null")
    s = df[col]
    bad = ~s.map(lambda v: isinstance(v, str) and v.strip() != "")
    if bad.any():
        raise UserError(
            f"{path} line {_line(df, bad)}: text column '{col}' holds {show_value(s[bad].iloc[0])}; "
            "every row needs a non-empty string"
        )


def text_columns(given) -> list[str]:
    """`data.text_col` as a list: none, one column, or several."""
    if not given:
        return []
    return [given] if isinstance(given, str) else [str(c) for c in given]


def joined_name(cols: list[str]) -> str:
    """The column that holds several text columns joined (`join_texts`)."""
    return " + ".join(cols)


def join_texts(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    """Several text columns as one text per row, in the given order, the empty ones left out: what the text
    models (TF-IDF, encoders) read; the text statistics are counted per column."""
    parts = df[cols].astype(object).where(df[cols].notna(), "").astype(str)
    return parts.apply(lambda r: " | ".join(v.strip() for v in r if v.strip()), axis=1)


def _texts(cfg, train: pd.DataFrame, test: pd.DataFrame, train_path: Path, test_path: Path) -> tuple:
    """(text_col, sources): one text column as it is; several joined into a new column of both tables (each must
    exist, and every row needs text in at least one)."""
    cols = text_columns(cfg.get("text_col"))
    if len(cols) <= 1:
        for df, path in ((train, train_path), (test, test_path)):
            if cols:
                check_text(df, cols[0], path)
        return (cols[0] if cols else None), []
    name = joined_name(cols)
    for df, path in ((train, train_path), (test, test_path)):
        for c in cols:
            if c not in df.columns:
                raise UserError(f"{path} has no text column '{c}' (data.text_col): name the file's columns")
        df[name] = join_texts(df, cols)
        check_text(df, name, path)
    return name, cols


def _feature_columns(cfg, train: pd.DataFrame, test: pd.DataFrame, test_path: Path) -> list[str]:
    """The tabular feature columns: `data.feature_cols`, or every column not used for another role."""
    texts = text_columns(cfg.get("text_col"))
    roles = {
        cfg.id_col,
        *text_columns(cfg.target),
        cfg.get("image_col"),
        cfg.get("group_col"),
        *texts,
        joined_name(texts),
    }
    given = cfg.get("feature_cols")
    cols = (
        ([given] if isinstance(given, str) else list(given))
        if given is not None
        else [c for c in train.columns if c not in roles]
    )
    for c in cols:
        if c not in train.columns:
            raise UserError(f"data.feature_cols names '{c}', which is not a column of data.train_csv")
        if c not in test.columns:
            raise UserError(
                f"column '{c}' is in train.csv but not in {test_path}: add it to the test file, or list "
                "the features to use with data.feature_cols=[...]"
            )
    return cols


def is_numeric(s: pd.Series) -> bool:
    """A numeric (or boolean) column: scaled as a number; any other column is a category."""
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def check_numeric(df: pd.DataFrame, cols: list[str], path: Path, train_path: Path | str) -> None:
    """Columns numeric in the training file must be numeric here too (a stray word would fail deep in a scaler)."""
    for c in (c for c in cols if not is_numeric(df[c])):
        s = df[c]
        bad = s.notna() & pd.to_numeric(s, errors="coerce").isna()
        if bad.any():
            raise UserError(
                f"{path} line {_line(df, bad)}: column '{c}' holds {show_value(s[bad].iloc[0])}, but it is a number "
                f"in {train_path}: write a number, or leave the cell empty for a missing value"
            )


def check_finite(df: pd.DataFrame, cols: list[str], path: Path) -> None:
    """Numeric feature columns must not hold inf or -inf (empty cells are fine: they are imputed per fold)."""
    for c in cols:
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            inf = np.isinf(df[c].to_numpy(float))
            if inf.any():
                raise UserError(
                    f"{path} line {_line(df, inf)}: column '{c}' holds {show_value(df[c][inf].iloc[0])}; features "
                    "must be finite (leave the cell empty for a missing value)"
                )


def check_sample(sample: Path, test: pd.DataFrame, id_col: str, test_path: Path) -> None:
    """The sample submission must hold exactly the test ids (in any order)."""
    df = read_csv(sample, "data.sample_submission")
    if id_col not in df.columns:
        raise UserError(f"{sample} has no id column '{id_col}' (columns: {', '.join(map(str, df.columns[:10]))})")
    ids, test_ids = df[id_col].astype(str), set(test[id_col].astype(str))
    unknown = ~ids.isin(test_ids)
    if unknown.any() or len(ids) != len(test_ids):
        first = f" (line {_line(df, unknown)}: id {show_value(df[id_col][unknown].iloc[0])})" if unknown.any() else ""
        raise UserError(
            f"{sample} ids differ from {test_path}: {int(unknown.sum())} unknown ids{first}, {len(ids)} rows for "
            f"{len(test_ids)} test ids; is data.sample_submission this competition's?"
        )


def _target(cfg, train: pd.DataFrame, path: Path) -> tuple[str, np.ndarray, list | None]:
    """(task, encoded target, classes) of `data.target`: one column, or several targets."""
    targets = text_columns(cfg.target)
    if not targets:
        raise UserError("data.target is empty: name the target column (or a list of columns)")
    for t in targets:
        if t not in train.columns:
            raise UserError(f"{path} has no target column '{t}'; set data.target=<column> (or a list of columns)")
        if train[t].isna().any() and not cfg.get("label_sep"):
            raise UserError(
                f"{path} line {_line(train, train[t].isna())}: missing value in target '{t}' "
                f"({int(train[t].isna().sum())} rows); drop or fill those rows"
            )
    if len(targets) > 1 or cfg.get("label_sep"):
        return _multi_target(cfg, train, path)
    if cfg.task in MULTI:
        raise UserError(f"data.task={cfg.task} needs several targets: data.target=[a,b,...] or data.label_sep")
    task, rule = infer_task(train[targets[0]], cfg.task)
    log.info("task: %s (%s)", task, rule)
    encoded, classes = encode_target(train[targets[0]], task, path, targets[0], cfg.get("positive_class"))
    return task, encoded, classes


def load_competition(cfg) -> Competition:
    """Read and validate a competition from its `data` config (see conf/data/csv.yaml)."""
    train_path, test_path = Path(cfg.train_csv), Path(cfg.test_csv)
    train = read_csv(train_path, "data.train_csv")
    test = read_csv(test_path, "data.test_csv", [c for c in train.columns if not is_numeric(train[c])])
    check_ids(train, cfg.id_col, train_path)
    check_ids(test, cfg.id_col, test_path)
    task, encoded, classes = _target(cfg, train, train_path)
    metric = get_metric(cfg.metric, task)
    if cfg.get("group_col") and cfg.group_col not in train.columns:
        raise UserError(f"{train_path} has no group column '{cfg.group_col}'; set data.group_col=<column> or null")
    if cfg.get("time_col") and cfg.time_col not in train.columns:
        raise UserError(f"{train_path} has no time column '{cfg.time_col}'; set data.time_col=<column> or null")
    image_dir = None
    if cfg.get("image_col"):
        image_dir = Path(cfg.image_dir) if cfg.get("image_dir") else train_path.parent
        if not image_dir.is_dir():
            raise UserError(f"data.image_dir={image_dir} is not a folder")
        outside = bool(cfg.get("allow_outside_image_dir", False))
        check_images(train, cfg.image_col, image_dir, train_path, outside)
        check_images(test, cfg.image_col, image_dir, test_path, outside)
    text_col, text_sources = _texts(cfg, train, test, train_path, test_path)
    sample = cfg.get("sample_submission")
    if sample and not Path(sample).is_file():
        raise UserError(f"data.sample_submission file not found: {sample} (set it to null to write id + target)")
    if sample:
        check_sample(Path(sample), test, cfg.id_col, test_path)
    feature_cols = _feature_columns(cfg, train, test, test_path)
    check_numeric(test, [c for c in feature_cols if is_numeric(train[c])], test_path, train_path)
    check_finite(train, feature_cols, train_path)
    check_finite(test, feature_cols, test_path)
    text_features = [c for c in feature_cols if not is_numeric(train[c])]
    datetime_cols = datetime_columns(cfg.get("datetime_cols", "auto"), train, text_features, train_path)
    check_dates(test, datetime_cols, test_path)
    return Competition(
        train=train,
        test=test,
        y=encoded,
        task=task,
        metric=metric,
        classes=classes,
        id_col=cfg.id_col,
        target=cfg.target if isinstance(cfg.target, str) else text_columns(cfg.target),
        label_sep=cfg.get("label_sep"),
        feature_cols=feature_cols,
        image_col=cfg.get("image_col"),
        image_dir=image_dir,
        text_col=text_col,
        text_sources=text_sources,
        group_col=cfg.get("group_col"),
        time_col=cfg.get("time_col"),
        data_hash=file_hash(train_path),
        train_path=train_path,
        test_path=test_path,
        sample_submission=Path(sample) if sample else None,
        datetime_cols=datetime_cols,
    )
