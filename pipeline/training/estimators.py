"""Heads that are scikit-learn (API) estimators (scikit-learn, LightGBM, XGBoost, CatBoost, pytabkit, ...) on tabular
features, TF-IDF and/or frozen embeddings: building the estimator a task needs, fitting it on a fold (early-stopped
on the fold's validation rows) and predicting. Neither Lightning nor the backbones' libraries are imported here, so
`make predict` of a tabular ensemble does not load them."""

import inspect
import logging
import time

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.errors import InstantiationException
from scipy import sparse
from sklearn.base import clone, is_classifier, is_regressor
from threadpoolctl import threadpool_limits

from pipeline.choices import MULTI, REGRESSIONS, Task
from pipeline.data.contract import Competition
from pipeline.data.tabular import categorical_positions, feature_columns
from pipeline.errors import UserError
from pipeline.training.devices import uses_gpu
from pipeline.training.loaders import ArrayDataset

log = logging.getLogger(__name__)


def _features(ds: ArrayDataset) -> np.ndarray | sparse.csr_matrix:
    """Embeddings, TF-IDF and tabular features side by side; sparse (CSR) as soon as one part is."""
    parts = [ds.arrays[k] for k in ("emb", "tfidf", "tab") if k in ds.arrays]
    parts = [p if sparse.issparse(p) else p.numpy() for p in parts]
    if any(sparse.issparse(p) for p in parts):
        return sparse.hstack(parts, format="csr")
    return np.concatenate(parts, axis=1)


def _all_classes(est, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns for every class, also those absent from this fold's training rows (probability 0)."""
    full = np.zeros((len(proba), n_classes))
    full[:, np.asarray(est.classes_, dtype=int)] = proba
    return full


def estimator_spec(head, task: str):
    """`model.head.regressor` when given for regression (it replaces the estimator: LR -> Ridge), else
    `model.head.estimator`."""
    return head.regressor if task in REGRESSIONS and head.get("regressor") else head.estimator


def estimator_target(target: str, task: str) -> str:
    """The class actually trained: a ...Classifier becomes its ...Regressor twin for regression (and back), so one
    preset (HistGradientBoosting, LightGBM, XGBoost, CatBoost, RandomForest, ...) serves every task."""
    want, other = ("Regressor", "Classifier") if task in REGRESSIONS else ("Classifier", "Regressor")
    return target[: -len(other)] + want if target.endswith(other) else target


def sklearn_estimator(spec, task: str):
    """Instantiate an estimator spec as `estimator_target` names it for the task."""
    target = estimator_target(str(spec._target_), task)
    if target != spec._target_:
        log.info("task %s: using %s", task, target)
    try:
        est = hydra.utils.instantiate(spec, _target_=target)
    except InstantiationException as e:
        raise UserError(f"model.head.estimator {target} could not be built: {str(e).splitlines()[0]}") from e
    if is_classifier(est) if task in REGRESSIONS else is_regressor(est):
        want = "regressor" if task in REGRESSIONS else "classifier"
        raise UserError(f"model.head.estimator {target} does not fit a {task} task: pick a {want}")
    return est


# Early stopping on the fold's own validation rows (every training row still trains; choosing one integer, the
# round count, on the validation rows makes their OOF score a shade optimistic, as in every Kaggle GBM kernel).
# Per library: the preset's key that turns it on (with the patience), how fit takes the validation rows, and the
# boosting rounds the predictions then use.
EARLY_STOPPING = {
    "lightgbm": (
        "early_stopping_round",
        lambda xv, yv: {"eval_X": (xv,), "eval_y": (yv,)},  # LightGBM >= 4.7 (eval_set is deprecated)
        lambda e: e.best_iteration_,
    ),
    "xgboost": (
        "early_stopping_rounds",
        lambda xv, yv: {"eval_set": [(xv, yv)], "verbose": False},
        lambda e: e.best_iteration + 1,
    ),
    "catboost": ("early_stopping_rounds", lambda xv, yv: {"eval_set": (xv, yv)}, lambda e: e.get_best_iteration() + 1),
    "sklearn": ("early_stopping", lambda xv, yv: {"X_val": xv, "y_val": yv}, lambda e: e.n_iter_),  # HistGB
    # RealMLP, TabM: always (no key), else they split 20 % off the training rows; each keeps its best epoch
    "pytabkit": (None, lambda xv, yv: {"X_val": xv, "y_val": yv}, None),
}


def _library(est) -> str:
    return type(est).__module__.split(".")[0]


def _stops_early(est) -> bool:
    lib = _library(est)
    if lib not in EARLY_STOPPING or (lib == "sklearn" and "X_val" not in inspect.signature(est.fit).parameters):
        return False
    if EARLY_STOPPING[lib][0] is None:
        return True
    value = est.get_params().get(EARLY_STOPPING[lib][0])
    return value is True if lib == "sklearn" else bool(value)  # HistGB's "auto" splits off its own rows


def _native_categoricals(est, cols: list[int], n_features: int) -> dict:
    """Tell the estimator which columns hold category codes: fit arguments (LightGBM, CatBoost) or its own
    parameters (XGBoost, HistGradientBoosting)."""
    lib = _library(est)
    if lib == "lightgbm":
        return {"categorical_feature": cols}
    if lib == "catboost":
        return {"cat_features": cols}
    if lib == "pytabkit":  # RealMLP one-hot encodes few levels and embeds more; TabM one-hot encodes them
        return {"cat_indicator": [i in set(cols) for i in range(n_features)]}
    if lib == "xgboost":
        types = ["c" if i in set(cols) else "q" for i in range(n_features)]
        est.set_params(enable_categorical=True, feature_types=types)
    elif "categorical_features" in est.get_params():
        est.set_params(categorical_features=cols)
    else:
        raise UserError(
            f"data.categorical_encoding=native: {type(est).__name__} cannot take categorical columns; "
            "use ordinal or onehot, or LightGBM, XGBoost, CatBoost or HistGradientBoosting"
        )
    return {}


def _categorical_columns(cfg, comp: Competition, ds: ArrayDataset, n_features: int) -> list[int]:
    """Positions of the native category codes in the head's input (the tabular block comes last)."""
    if "tab" not in ds.arrays or cfg.data.categorical_encoding != "native":
        return []
    numeric, categorical, _ = feature_columns(comp, cfg.data, report=False)
    offset = n_features - ds.arrays["tab"].shape[1]
    return [offset + i for i in categorical_positions(numeric, categorical, cfg.data.categorical_encoding)]


def _with_integer_codes(x: np.ndarray, cols: list[int]):
    """CatBoost reads categoricals from integer (or string) columns only."""
    frame = pd.DataFrame(x)
    frame[cols] = frame[cols].astype(np.int64)
    return frame


def _use_threads(est, threads: int) -> None:
    params = est.get_params()
    if "n_jobs" in params and params["n_jobs"] is None and type(est).__name__ != "LogisticRegression":
        est.set_params(n_jobs=threads)  # RandomForest, LightGBM, XGBoost, ... (LogisticRegression ignores it)
    elif _library(est) == "catboost" and params.get("thread_count") is None:
        est.set_params(thread_count=threads)  # CatBoost lists only the parameters it was given
    elif "n_threads" in params and params["n_threads"] is None:
        est.set_params(n_threads=threads)  # pytabkit (its default: every physical core)


def sklearn_inputs(est, ds: ArrayDataset, categorical: list[int], as_sparse: bool = False):
    """The estimator's input matrix for a dataset's rows (category codes as integers for CatBoost; a sparse matrix
    with `model.sparse_input`, where XGBoost reads the zeros as missing values)."""
    x = _features(ds)
    if as_sparse:
        return sparse.csr_matrix(x)
    first = est[0] if isinstance(est, list) else est  # several targets: one estimator each, of one library
    return _with_integer_codes(x, categorical) if categorical and _library(first) == "catboost" else x


def predict_sklearn(est, comp: Competition, x) -> np.ndarray:
    """Values (regression) or one probability column per class of the competition; several targets: a list of
    estimators, one per target, giving P(label) or values."""
    if comp.task == Task.MULTILABEL:
        return np.stack([e.predict_proba(x)[:, 1] for e in est], axis=1)
    if comp.task == Task.MULTIREGRESSION:
        return np.stack([e.predict(x) for e in est], axis=1)
    if comp.task == "regression":
        return est.predict(x)
    return _all_classes(est, est.predict_proba(x), len(comp.classes))


def _fit(cfg, comp: Competition, est, datasets: dict) -> tuple[dict, int | None, list[int], object]:
    """Fit on the fold's training rows (early-stopped on its validation rows where the estimator does that);
    returns the feature matrices (train, val, test), the boosting rounds used (None without early stopping; several
    targets: their mean), the positions of native categorical columns and the fitted model (several targets: a
    list, one fitted clone per target)."""
    n_features = _features(datasets["train"]).shape[1]
    cols = _categorical_columns(cfg, comp, datasets["train"], n_features)
    kwargs = _native_categoricals(est, cols, n_features) if cols else {}
    as_sparse = cfg.model.get("sparse_input", False)  # absent from the image and text presets
    x = {p: sklearn_inputs(est, datasets[p], cols, as_sparse) for p in ("train", "val", "test")}
    y = {p: datasets[p].arrays["y"].numpy() for p in ("train", "val")}
    if comp.task not in MULTI:
        return x, _fit_one(est, x, y, kwargs), cols, est
    ests = [clone(est) for _ in range(y["train"].shape[1])]  # one model per target, each early-stopped on its own
    rounds = [_fit_one(e, x, {p: v[:, j] for p, v in y.items()}, kwargs) for j, e in enumerate(ests)]
    return x, (None if rounds[0] is None else round(float(np.mean(rounds)))), cols, ests


def _fit_one(est, x: dict, y: dict, kwargs: dict) -> int | None:
    """Fit one estimator (early-stopped where it does that); returns the boosting rounds kept, or None."""
    stops = _stops_early(est)
    if stops:
        kwargs = kwargs | EARLY_STOPPING[_library(est)][1](x["val"], y["val"])
    est.fit(x["train"], y["train"], **kwargs)
    rounds_kept = EARLY_STOPPING[_library(est)][2] if stops else None
    if _library(est) == "lightgbm":  # its per-round validation scores are not needed to predict (the round kept is
        est._evals_result = {}  # in history.csv), and skops stores each as a file: ~600 a fold, half the load time
    return int(rounds_kept(est)) if rounds_kept else None


def fit_sklearn(cfg, comp: Competition, datasets: dict, start: float) -> dict:
    """A scikit-learn (API) estimator as the head, on tabular features and/or frozen embeddings."""
    if not isinstance(datasets["train"], ArrayDataset):
        raise UserError("model.head.type=sklearn needs features: use model.finetune=frozen (or model=tabular)")
    est = sklearn_estimator(estimator_spec(cfg.model.head, comp.task), comp.task)
    threads = torch.get_num_threads()  # the job's share of the cores (`threads`, or cores / parallel jobs)
    _use_threads(est, threads)
    if _library(est) == "pytabkit":  # its own default is a GPU whenever there is one; the job's accelerator wins
        est.set_params(device="cuda" if uses_gpu(cfg.trainer.accelerator) else "cpu")
    if comp.task not in REGRESSIONS and not hasattr(est, "predict_proba"):
        raise UserError(
            f"model.head.estimator {type(est).__name__} has no predict_proba; pick a probabilistic "
            "classifier (e.g. LogisticRegression, or SVC with probability=true)"
        )
    with threadpool_limits(limits=threads):  # OpenMP estimators (HistGradientBoosting) and BLAS alike
        x, rounds, cols, est = _fit(cfg, comp, est, datasets)
        val, tick = predict_sklearn(est, comp, x["val"]), time.time()
        test, test_seconds = predict_sklearn(est, comp, x["test"]), time.time() - tick
    score = comp.metric(datasets["val"].arrays["y"].numpy(), val)
    hist = [{"epoch": 0, "train_loss": float("nan"), "val_loss": float("nan"), "val_metric": score}]
    if rounds is not None:
        hist[0]["best_iteration"] = rounds  # boosting rounds kept by early stopping (the cap is the preset's)
    return {
        "val": val,
        "test": test,
        "history": hist,
        "epochs": 1,
        "best_epoch": 0,
        "seconds": time.time() - start,
        "test_seconds": test_seconds,
        "model": est,
        "categorical": cols,
    }
