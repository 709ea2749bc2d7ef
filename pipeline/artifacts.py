"""The outputs layout (competition.json as a record, the model folder's format) and atomic writes: nothing half-written
is ever read later."""

import functools
import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    The rename is atomic on one filesystem, so readers see the old file or the new one, never a part.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the user's usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame as CSV (no index), atomically."""
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def write_json(obj: Any, path: Path) -> Path:
    """Write JSON (indented, keys in insertion order), atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


# -- competition.json: what the prepare stage tells every later stage -------------------------------------------
COMPETITION = "competition.json"


@dataclass(frozen=True, kw_only=True)
class CompetitionInfo:
    """competition.json as a record: its fields in the file's key order. The defaults are for outputs written
    before those keys existed (and are never written by `prepare` as defaults: it sets every field)."""

    task: str
    metric: str | dict  # a metric's name, or a custom metric's {_target_, greater_is_better, needs}
    classes: list | None  # original labels (classes[i] is encoded as i); None for regression; several targets: names
    id_col: str
    target: str | list[str]  # a list: several target columns (multilabel, multiregression)
    train_csv: str
    test_csv: str | None = None  # older outputs lack it: the ensemble stage falls back to data.test_csv
    n_train: int
    n_test: int
    data_hash: str
    folds_hash: str
    sample_submission: str | None = None  # None: submissions are id + target
    feature_cols: list[str] = field(default_factory=list)
    numeric_cols: list[str] | None = None  # older outputs lack it: predict lets pandas guess the columns' types
    image_col: str | None = None
    text_col: str | None = None
    datetime_cols: dict[str, str] = field(default_factory=dict)  # date columns: {column: format} (older: none)
    text_sources: list[str] = field(default_factory=list)  # several text columns, which text_col joins
    label_sep: str | None = None  # multilabel: `target` holds labels joined by it

    @property
    def target_cols(self) -> list[str]:
        """The target's columns in the training file: one, or several (multilabel, multiregression)."""
        return [self.target] if isinstance(self.target, str) else list(self.target)

    @property
    def columns(self) -> list[str]:
        """The prediction columns of oof.csv/test.csv: str(class) per class, or ["prediction"]."""
        return ["prediction"] if self.classes is None else [str(c) for c in self.classes]

    @classmethod
    def read(cls, path: Path) -> "CompetitionInfo":
        """Read competition.json (`path`, or the outputs folder holding it); unknown keys are ignored."""
        path = Path(path)
        path = path / COMPETITION if path.is_dir() else path
        try:
            raw = read_json(path)
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not valid JSON (truncated or edited): rerun `make train` to rewrite it") from e
        try:
            return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        except TypeError as e:
            raise UserError(f"{path} lacks a key ({e}): rerun `make train` to rewrite it") from e

    def write(self, path: Path) -> Path:
        """Write competition.json (`path`, or the outputs folder to hold it), atomically."""
        path = Path(path)
        return write_json(asdict(self), path / COMPETITION if path.is_dir() else path)


# -- The model folder: outputs/<name>/models/<model_id>/ -------------------------------------------------------
# Every stage reads and writes a member through ModelFolder; this is the format's one definition.
#   config.yaml    the resolved config that trained it (written first)
#   folds/fold<k>.npz   one finished fold: validation + test predictions, history (a rerun resumes from these)
#   folds/fold<k>.skops what the fold needs to predict new rows: fitted preprocessing (tabular transformer, TF-IDF,
#                  image statistics, target scaling) and a fitted estimator, in skops format with library versions
#   folds/fold<k>.pt    a torch model's weights (head, and the backbone when it was finetuned)
#   folds/fold<k>.estimator.pt  an estimator that holds torch modules (pytabkit's), which skops cannot write
#   folds/refit.skops (.pt, .estimator.pt)  with model.refit_full: the model refitted on every training row, as a
#                  fold model is saved; it alone predicts new rows (pipeline/training/refit.py)
#   oof.csv        id column, then one probability column per class (class names as headers) or `prediction`;
#                  each training row predicted by the fold model that never saw it
#   test.csv       the same columns for the test rows, averaged over the fold models (or the refit model's)
#   history.csv    one row per fold and epoch (losses, scores, monitors)
#   advice.json    the advisor's findings before and after training
#   metrics.json   CV score, fold scores, task, classes, folds_hash... written LAST: it marks the folder complete
MODELS = "models"


@dataclass(frozen=True)
class ModelFolder:
    """One member's folder: its files' paths, writing (atomic, metrics last), reading and completeness."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    config = property(lambda self: self.path / "config.yaml")
    oof = property(lambda self: self.path / "oof.csv")
    test = property(lambda self: self.path / "test.csv")
    history = property(lambda self: self.path / "history.csv")
    advice = property(lambda self: self.path / "advice.json")
    metrics = property(lambda self: self.path / "metrics.json")

    def fold(self, k: int) -> Path:
        return self.path / "folds" / f"fold{k}.npz"

    def fold_files(self) -> list[Path]:
        return sorted((self.path / "folds").glob("fold*.npz"))

    def fold_ids(self) -> list[int]:
        """The folds whose fitted models are saved (what prediction uses)."""
        return sorted(int(f.stem.removeprefix("fold")) for f in (self.path / "folds").glob("fold*.skops"))

    def write_fold(self, k: int, res: dict, folds_hash: str) -> None:
        """Fold k's predictions (`val`, `test`) and its history, tagged with the folds they belong to."""
        keys = ("history", "epochs", "best_epoch", "seconds", "test_seconds")
        meta = {key: res.get(key) for key in keys} | {"folds_hash": folds_hash}

        def write(tmp: Path) -> None:
            buf = io.BytesIO()
            np.savez(buf, val=res["val"], test=res["test"], meta=np.array(json.dumps(meta)))
            tmp.write_bytes(buf.getvalue())

        atomic_write(self.fold(k), write)

    def read_fold(self, k: int, folds_hash: str) -> dict | None:
        """Fold k's saved result, or None when it is missing or was made on other folds."""
        if not self.fold(k).is_file():
            return None
        with np.load(self.fold(k)) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("folds_hash") != folds_hash:
                return None
            return {"val": z["val"], "test": z["test"], **meta}

    def write_fold_model(self, k: int, state: dict, weights: dict | None) -> None:
        """What fold k needs to predict new rows: its fitted preprocessing and estimator (`state`, skops) and a
        torch model's weights (`weights`, a state dict)."""
        self._write_model(self.fold(k), state, weights)

    def read_fold_model(self, k: int) -> tuple[dict, dict | None]:
        """(state, weights) of fold k, refused in one line when missing or made by other library versions."""
        return self._read_model(self.fold(k))

    @property
    def refit(self) -> Path:  # the stem of the refit model's files, as fold(k) is a fold's
        return self.path / "folds" / "refit.npz"

    def has_refit(self) -> bool:
        return self.refit.with_suffix(".skops").is_file()

    def write_refit_model(self, state: dict, weights: dict | None) -> None:
        """The model refitted on every training row (model.refit_full), saved as a fold model is."""
        self._write_model(self.refit, state, weights)

    def read_refit_model(self) -> tuple[dict, dict | None]:
        return self._read_model(self.refit)

    def model_files(self) -> list[Path]:
        """Every file that predicting new rows reads (what a bundle copies): fold models and the refit model."""
        folds = self.path / "folds"
        refit = [self.refit.with_suffix(s) for s in (".skops", ".pt", ".estimator.pt")]
        return sorted(folds.glob("fold*.skops")) + sorted(folds.glob("fold*.pt")) + [p for p in refit if p.is_file()]

    def _write_model(self, stem: Path, state: dict, weights: dict | None) -> None:
        if weights is not None:
            import torch  # heavy: only where a model is written

            atomic_write(stem.with_suffix(".pt"), lambda tmp: torch.save(weights, tmp))
        est = state.get("estimator")
        first = est[0] if isinstance(est, list) else est  # several targets: one estimator each
        if type(first).__module__.startswith(TORCH_ESTIMATORS):
            types = dump_torch(est, stem.with_suffix(".estimator.pt"))
            state = state | {"estimator": None, "estimator_types": types}
        dump_safe(state, stem.with_suffix(".skops"))

    def _read_model(self, stem: Path) -> tuple[dict, dict | None]:
        path = stem.with_suffix(".skops")
        if not path.is_file():
            raise UserError(f"{path} not found: {self.name} was trained before fold models were saved; retrain it")
        state = load_safe(path)
        check_versions(state["versions"], path)
        if state.get("estimator_types"):
            state["estimator"] = load_torch(stem.with_suffix(".estimator.pt"), state["estimator_types"])
        pt = stem.with_suffix(".pt")
        if not pt.is_file():
            return state, None
        import torch

        return state, torch.load(pt, map_location="cpu", weights_only=True)  # weights_only: tensors, no code

    def is_complete(self, folds_hash: str | None = None) -> bool:
        """metrics.json is there (and, given `folds_hash`, was made on those folds)."""
        if not self.metrics.is_file():
            return False
        return folds_hash is None or self.read_metrics().get("folds_hash") == folds_hash

    def read_metrics(self) -> dict:
        return read_json(self.metrics)

    def read_history(self) -> pd.DataFrame:
        """history.csv, or an empty frame when the member kept none."""
        return pd.read_csv(self.history) if self.history.is_file() else pd.DataFrame()

    def read_config(self) -> DictConfig | None:
        return OmegaConf.load(self.config) if self.config.is_file() else None

    def write_config(self, cfg: DictConfig) -> None:
        atomic_write(self.config, lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))

    def write_results(self, oof: pd.DataFrame, test: pd.DataFrame, history: pd.DataFrame, metrics: dict) -> None:
        """oof.csv, test.csv, history.csv, then metrics.json last: a reader never sees a half-written member."""
        write_csv(oof, self.oof)
        write_csv(test, self.test)
        write_csv(history, self.history)
        write_json(metrics, self.metrics)


# -- Fitted objects in a safe format: skops (no arbitrary code runs on load), with the library versions --------------
FORMAT = 1  # of the fold model and ensemble files; bump when their layout changes
LIBRARIES = ("pipeline", "scikit-learn", "lightgbm", "xgboost", "catboost", "pytabkit", "torch", "timm", "transformers")
TRUSTED = ("pipeline.", "sklearn.", "numpy.", "scipy.", "lightgbm.", "xgboost.", "catboost.", "collections.")


@functools.cache  # once a process: read for every fold model saved or loaded
def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_versions(saved: dict, path: Path) -> None:
    """Refuse a file written under another major.minor version of a library that pickles state into it."""
    now = library_versions()
    for name, version in saved.items():
        if version and now.get(name) and version.split(".")[:2] != now[name].split(".")[:2]:
            raise UserError(
                f"{path} was written with {name} {version}, this environment has {now[name]}: install "
                f"{name}=={version} (or retrain)"
            )


TYPES = "trusted-types.json"  # in the skops zip beside skops' own entries: its types, listed when it was written


def load_safe(path: Path) -> dict:
    """A skops file whose types all come from the trusted libraries (refused otherwise: it could run code).

    The file lists its types (written by `dump_safe`), so skops audits it once, while it loads: a type outside the
    trusted libraries is refused here, one the list leaves out by skops. Files without the list, or whose list
    leaves types out (written where skops trusted every scikit-learn estimator by default, or forged), are audited
    whole, then loaded (twice the work)."""
    import zipfile

    skops_io = _skops_io()
    data = Path(path).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        types = json.loads(z.read(TYPES)) if TYPES in z.namelist() else None
    if types is not None:
        try:
            return skops_io.loads(data, trusted=_checked(types, path))
        except skops_io.exceptions.UntrustedTypesFoundException:
            pass
    return skops_io.loads(data, trusted=_checked(skops_io.get_untrusted_types(data=data), path))


def _checked(types: list[str], path: Path) -> list[str]:
    foreign = [t for t in types if not t.startswith(TRUSTED)]
    if foreign:
        raise UserError(f"{path} holds types outside the trusted libraries ({', '.join(foreign[:3])}): not loaded")
    return types


@functools.cache
def _skops_io():
    """skops.io, imported without the walk over every scikit-learn module that its import makes to list the
    estimators it trusts by default (0.4 s, and torch's import through sklearn.externals: 1.2 s more). Our files list
    their types themselves (`dump_safe`) and `load_safe` trusts exactly those, so that default list is not needed."""
    import sklearn.utils

    walk = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda type_filter=None: []  # skops reads it once, while it is imported
    try:
        from skops import io as skops_io
    finally:
        sklearn.utils.all_estimators = walk
    return skops_io


def dump_safe(obj: dict, path: Path) -> Path:
    """`obj` (with the format and library versions added) as a skops file listing its types, atomically."""
    import zipfile

    skops_io = _skops_io()
    payload = {"format": FORMAT, "versions": dict(library_versions())} | obj
    data = io.BytesIO(skops_io.dumps(payload))
    types = skops_io.get_untrusted_types(data=data.getvalue())
    with zipfile.ZipFile(data, "a") as z:
        z.writestr(TYPES, json.dumps(types))
    return atomic_write(path, lambda tmp: tmp.write_bytes(data.getvalue()))


# Estimators holding torch modules: written by torch.save, read by torch's weights-only unpickler, which builds only
# the types the fold's state lists (`dump_torch` records them). Each must be a class of the trusted libraries or the
# few functions a fitted network holds (activations, schedules, losses): never a function that reads a file (pytabkit's
# own `utils.deserialize` unpickles one), so a forged file cannot run code.
TORCH_ESTIMATORS = ("pytabkit.",)
TORCH_CLASSES = TRUSTED + ("pytabkit.", "torch.nn.", "torch.Size", "torch.Tensor", "torch.device", "torch.dtype")
TORCH_CLASSES += ("torch._C._VariableFunctionsClass", "pandas.DataFrame", "lightning.fabric.utilities.data.")
TORCH_FUNCTIONS = ("pytabkit.models.nn_models.", "pytabkit.models.training.", "numpy._core.multiarray.")
TORCH_FUNCTIONS += ("builtins.getattr", "builtins.slice", "functools.partial")


def dump_torch(obj, path: Path) -> list[str]:
    """`obj` as a torch file, atomically; returns the types and functions `load_torch` must build it with."""
    import pickle
    import types

    import torch

    seen = set()

    class Recorder(pickle.Pickler):
        def reducer_override(self, o):  # every object pickled, but classes and functions (those are globals)
            if not isinstance(o, type | types.FunctionType | types.BuiltinFunctionType):
                seen.add(f"{type(o).__module__}.{type(o).__qualname__}")
            return NotImplemented

    buf = io.BytesIO()
    torch.save(obj, buf, pickle_module=types.SimpleNamespace(Pickler=Recorder, __name__="pickle"))
    buf.seek(0)
    names = sorted(seen | set(torch.serialization.get_unsafe_globals_in_checkpoint(buf)))
    _torch_globals(names, path)  # refused now rather than when predicting
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    return names


def load_torch(path: Path, names: list[str]):
    """A `dump_torch` file, building nothing but `names` (each checked)."""
    import torch

    with torch.serialization.safe_globals(_torch_globals(names, path)):
        return torch.load(path, map_location="cpu", weights_only=True)


def _torch_globals(names: list[str], path: Path) -> list:
    """The objects `names` stand for, refused in one line unless every one is trusted (checked before importing)."""
    found = {n: _resolve(n) for n in names if n.startswith(TORCH_CLASSES + TORCH_FUNCTIONS)}
    foreign = [n for n in names if n not in found or not (isinstance(found[n], type) or n.startswith(TORCH_FUNCTIONS))]
    if foreign:
        raise UserError(f"{path} holds types outside the trusted libraries ({', '.join(foreign[:3])}): not loaded")
    return list(found.values())


def _resolve(name: str):
    """The class or function a dotted name (module path, then attributes: nested classes) stands for."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        return functools.reduce(getattr, parts[i:], obj)
    raise UserError(f"{name}: no such module")


def model_folder(out_dir: Path, model_id: str) -> ModelFolder:
    return ModelFolder(Path(out_dir) / MODELS / model_id)


def model_folders(out_dir: Path, complete: bool = True) -> list[ModelFolder]:
    """The member folders under out_dir/models (by name); only the complete ones unless `complete=False`."""
    root = Path(out_dir) / MODELS
    folders = [ModelFolder(p) for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
    return [f for f in folders if f.is_complete()] if complete else folders
