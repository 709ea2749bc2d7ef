"""Anchors: on every demo, the tool a competitor would otherwise reach for, beside what our zoo reached.

    image (mnist)         frozen ImageNet EfficientNet-Lite0 at 224 px (our backbone code) + LogisticRegression
    text (rotten)         TF-IDF word 1-2 grams + char_wb 2-5 grams (sublinear tf) + LogisticRegression
    tabular (adult, ames) AutoGluon TabularPredictor, presets="best_quality", on 2 cores, in its own venv
    mixed (tweets)        two rows: AutoGluon as above, and one LogisticRegression on the text's TF-IDF (as for
                          text) joined with one-hot categoricals, standardized numerics and date parts
    multilabel (movies)   one-vs-rest LightGBM (one LGBMClassifier per label, defaults, on the table's columns), and
                          the joined LogisticRegression above per label

AutoGluon is installed with its neural models (NN_TORCH, FastAI: fitted when its time limit reaches them, after
its trees) and gets the raw columns: text as text (it builds its
own n-gram features) and ISO timestamp columns parsed to datetimes (its datetime features), so that it sees the
dates as the joined LogisticRegression does.

LogisticRegression's C is picked by 5-fold CV on train only. Test scores use data/<demo>/test_labels.csv and the
demo's metric. The zoo columns come from outputs/<demo>/leaderboard.csv (the chosen ensemble; the best member by
CV, as the ensemble stage reports it) and outputs/<demo>/zoo.json (`seconds`); "n/a" where absent. AutoGluon gets
the zoo's wall seconds as its time limit when zoo.json exists, else --time-limit. The table is printed and merged
into outputs/anchors.csv (rows of the demos run replace their old rows). `zoo_gain` is the zoo's submission's test
score minus the anchor's (positive: the zoo is better) and `zoo_gain_se` its standard error over 300 paired
bootstrap resamples of the test rows: a gain within about two of them is a tie on this test set.

    .venv/bin/python benchmarks/bench_anchors.py [--demos mnist rotten] [--skip-autogluon] [--time-limit 900]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from sklearn.compose import make_column_transformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from pipeline.artifacts import write_csv
from pipeline.data.demos import DEMOS, export
from pipeline.data.image import ImageDataset, build_transform
from pipeline.metrics import METRICS, get_metric
from pipeline.models.backbones import build_backbone
from pipeline.training.embeddings import embed

ROOT = Path(__file__).resolve().parents[1]
# The fastai extra (its FastAI net) needs torch < 2.14, and pip resolves it only with torch pinned beside it.
AUTOGLUON = ["autogluon.tabular[lightgbm,catboost,xgboost,fastai]==1.6.3", "torch==2.13.*"]
AG_VENV = Path(os.environ.get("TMPDIR", "/tmp")) / "anchors-venv-nn"
AG_NEURAL = ("NeuralNetTorch", "NeuralNetFastAI")  # name prefixes of AutoGluon's NN_TORCH and FASTAI models
ISO_DATE = r"\d{4}-\d\d-\d\d"  # how a timestamp column's values start (2013-12-10T20:00:00Z)
AG_METRIC = {"roc_auc": "roc_auc", "accuracy": "accuracy", "rmse": "root_mean_squared_error"}
SK_SCORING = {"roc_auc": "roc_auc", "accuracy": "accuracy"}  # GridSearchCV's names for the demos' metrics

AG_SCRIPT = """
import sys
import pandas as pd
from autogluon.tabular import TabularPredictor

train_csv, test_csv, label, metric, problem, limit, out, workdir, dates, neural = sys.argv[1:]
train, test = pd.read_csv(train_csv).drop(columns="id"), pd.read_csv(test_csv).drop(columns="id")
for frame in (train, test):  # ISO strings -> naive UTC datetimes, which its datetime feature generator reads
    for column in filter(None, dates.split(",")):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.tz_localize(None)
predictor = TabularPredictor(label=label, eval_metric=metric, problem_type=problem, path=workdir, verbosity=1)
predictor.fit(train, presets="best_quality", time_limit=float(limit), num_cpus=2)
meta = predictor.feature_metadata_in
print("  autogluon's feature types:", dict(meta.get_type_group_map_raw()), dict(meta.type_group_map_special))
board = predictor.leaderboard(silent=True)[["model", "score_val", "fit_time"]]
print(board.to_string(index=False))  # the models it fitted in the time (they differ between runs) and its choice
print("  autogluon predicts with", predictor.model_best)
fitted = [p for p in neural.split(",") if board["model"].str.startswith(p).any()]
print("  neural models fitted:", ", ".join(fitted) or "none (the time limit ran out before them)")
pred = predictor.predict(test).to_frame() if problem == "regression" else predictor.predict_proba(test)
pred[sorted(pred.columns)].to_csv(out, index=False)  # classes sorted, as the pipeline encodes them
"""


def fit_logreg(x, y: np.ndarray, grid: list[float], scoring: str, pre=()) -> GridSearchCV:
    """LogisticRegression after the `pre` steps, C chosen by 5-fold CV on train (refit on all of it)."""
    model = make_pipeline(*pre, LogisticRegression(max_iter=3000))
    return GridSearchCV(model, {"logisticregression__C": grid}, scoring=scoring, cv=5).fit(x, y)


def text_anchor(train: pd.DataFrame, test: pd.DataFrame, cfg) -> np.ndarray:
    """TF-IDF word + char n-grams and LogisticRegression, C in {1, 4, 16}; returns test probabilities."""
    tfidf = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = fit_logreg(train[cfg.text_col], train[cfg.target], [1, 4, 16], SK_SCORING[cfg.metric], [tfidf])
    print(f"  tfidf+logreg: C={model.best_params_['logisticregression__C']}, CV {model.best_score_:.5f}")
    return model.predict_proba(test[cfg.text_col])


def date_columns(frame: pd.DataFrame, skip: list[str]) -> list[str]:
    """The non-numeric columns (outside `skip`) whose every value is an ISO timestamp string."""
    return [
        c
        for c in frame.columns
        if c not in skip
        and not pd.api.types.is_numeric_dtype(frame[c])
        and frame[c].dropna().astype(str).str.match(ISO_DATE).all()
    ]


def date_parts(frame: pd.DataFrame) -> pd.DataFrame:
    """Hour, weekday, month and year of each timestamp column (UTC), as categories for one-hot encoding."""
    parts = {}
    for column in frame.columns:
        stamps = pd.to_datetime(frame[column], utc=True)
        for part in ("hour", "day_of_week", "month", "year"):
            parts[f"{column}_{part}"] = getattr(stamps.dt, part).astype(str)
    return pd.DataFrame(parts, index=frame.index)


def joined_anchor(train: pd.DataFrame, test: pd.DataFrame, cfg) -> np.ndarray:
    """One LogisticRegression on TF-IDF(text) + one-hot categoricals + z-scored numerics + one-hot date parts
    (hour and weekday act in steps, not lines), C in {1, 4, 16, 64} by 5-fold CV; returns test probabilities."""
    skip = ["id", cfg.target, cfg.text_col]
    features = train.drop(columns=cfg.target)
    dates = date_columns(train, skip)
    numeric = [c for c in train.columns if c not in skip and pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in train.columns if c not in [*skip, *dates, *numeric]]
    tfidf = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    onehot = OneHotEncoder(handle_unknown="ignore")
    columns = make_column_transformer(
        (tfidf, cfg.text_col),
        (make_pipeline(SimpleImputer(strategy="most_frequent"), onehot), categorical),
        (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        (make_pipeline(FunctionTransformer(date_parts), OneHotEncoder(handle_unknown="ignore")), dates),
    )
    print(f"  joined logreg: text {cfg.text_col}, categorical {categorical}, numeric {numeric}, dates {dates}")
    model = fit_logreg(features, train[cfg.target], [1, 4, 16, 64], SK_SCORING[cfg.metric], [columns])
    print(f"  joined logreg: C={model.best_params_['logisticregression__C']}, CV {model.best_score_:.5f}")
    return model.predict_proba(test)


def image_anchor(train: pd.DataFrame, test: pd.DataFrame, cfg) -> np.ndarray:
    """Frozen EfficientNet-Lite0 features at its native 224 px + LogisticRegression, C in {0.01, 0.1, 1}."""
    bcfg = OmegaConf.load(ROOT / "conf/model/image.yaml").backbone
    bcfg.input_size = 224  # ImageNet's size (the zoo uses 48 px for speed on the CPU)
    backbone = build_backbone("image", bcfg)
    transform = build_transform(bcfg.input_size, backbone.mean, backbone.std)
    folder = ROOT / "data" / cfg.name / "images"
    x_train, x_test = (
        embed(backbone.module, ImageDataset([folder / p for p in df[cfg.image_col]], transform), 64)
        for df in (train, test)
    )
    model = fit_logreg(x_train, train[cfg.target], [0.01, 0.1, 1], SK_SCORING[cfg.metric], [StandardScaler()])
    print(f"  effnet-lite0+logreg: C={model.best_params_['logisticregression__C']}, CV {model.best_score_:.5f}")
    return model.predict_proba(x_test)


def autogluon_python() -> Path:
    """The python of AutoGluon's own venv, created and installed on first use (kept out of the project's)."""
    python, stamp = AG_VENV / "bin/python", AG_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(AUTOGLUON):
        print(f"  installing {' '.join(AUTOGLUON)} into {AG_VENV} (once; a few minutes)")
        subprocess.run(["python3.11", "-m", "venv", str(AG_VENV)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *AUTOGLUON], check=True)
        stamp.write_text(" ".join(AUTOGLUON))
    return python


def autogluon_anchor(cfg, task: str, time_limit: float) -> np.ndarray:
    """AutoGluon best_quality on train.csv within `time_limit` seconds; returns its test predictions."""
    python = autogluon_python()
    folder = ROOT / "data" / cfg.name
    dates = ",".join(date_columns(pd.read_csv(folder / "train.csv"), ["id", cfg.target]))
    with tempfile.TemporaryDirectory(prefix="anchor-ag-") as tmp:
        script, out = Path(tmp) / "fit.py", Path(tmp) / "pred.csv"
        script.write_text(AG_SCRIPT)
        args = [folder / "train.csv", folder / "test.csv", cfg.target, AG_METRIC[cfg.metric], task, time_limit]
        extra = [out, Path(tmp) / "models", dates, ",".join(AG_NEURAL)]
        subprocess.run([python, script, *map(str, args), *map(str, extra)], check=True)
        pred = pd.read_csv(out)
    return pred.iloc[:, 0].to_numpy() if task == "regression" else pred.to_numpy()


def zoo_scores(demo: str, metric) -> dict:
    """The zoo's ensemble and best-member test scores and its wall seconds, NaN where not (yet) recorded."""
    out = ROOT / "outputs" / demo
    row = {"zoo_test": np.nan, "best_member_test": np.nan, "zoo_seconds": np.nan}
    if (out / "leaderboard.csv").is_file():
        board = pd.read_csv(out / "leaderboard.csv")
        members = board[board["kind"] == "member"].sort_values("cv_mean", ascending=not metric.greater_is_better)
        row["zoo_test"] = board.loc[board["chosen"], "test_score"].iloc[0]
        row["best_member_test"] = members["test_score"].iloc[0]
    if (out / "zoo.json").is_file():
        row["zoo_seconds"] = json.loads((out / "zoo.json").read_text()).get("seconds", np.nan)
    return row


def submission_pred(demo: str, classes: np.ndarray, task: str, positive=None) -> np.ndarray | None:
    """The zoo's submission.csv as the metric reads it: values, one probability column per sorted class, or
    one-hot labels (a label submission); a binary submission's single column is P(data.positive_class), by default
    the second class's probability. Rows in test_labels.csv's order."""
    path = ROOT / "outputs" / demo / "submission.csv"
    if not path.is_file():
        return None
    ids = pd.read_csv(ROOT / "data" / demo / "test_labels.csv").iloc[:, 0]
    sub = pd.read_csv(path).set_index(ids.name).loc[ids]
    if task == "regression":
        return sub.iloc[:, 0].to_numpy(float)
    if sub.shape[1] > 1:
        return sub[[str(c) for c in classes]].to_numpy(float)
    values = sub.iloc[:, 0]
    if task == "binary" and not values.isin(classes).all():
        p = values.to_numpy(float)
        return np.c_[1 - p, p] if positive is None or positive == classes[1] else np.c_[p, 1 - p]
    return np.eye(len(classes))[np.searchsorted(classes, values)]


def paired_bootstrap(metric, y: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 300) -> tuple[float, float]:
    """How much better `a` scores than `b` on the test rows (positive: better), and the standard error of that
    difference over bootstrap resamples of the rows, both scored on the same resample (paired)."""
    sign = 1 if metric.greater_is_better else -1
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        diffs.append(sign * (metric(y[i], a[i]) - metric(y[i], b[i])))
    return sign * (metric(y, a) - metric(y, b)), float(np.std(diffs))


def anchors(cfg, train: pd.DataFrame, test: pd.DataFrame, task: str, limit: float) -> list[tuple]:
    """The demo's anchors as (name, fit) pairs: by its image or text column, AutoGluon for tables; a text column
    beside other features (a mixed table) gets both the joined LogisticRegression and AutoGluon."""
    autogluon = (f"autogluon best_quality {limit:.0f}s", lambda: autogluon_anchor(cfg, task, limit))
    if cfg.get("image_col"):
        return [("effnet-lite0-224 + logreg", lambda: image_anchor(train, test, cfg))]
    if cfg.get("text_col") and set(train.columns) == {"id", cfg.text_col, cfg.target}:
        return [("tfidf + logreg", lambda: text_anchor(train, test, cfg))]
    if cfg.get("text_col"):
        return [("tfidf + onehot + dates + logreg", lambda: joined_anchor(train, test, cfg)), autogluon]
    return [autogluon]


def ovr_lgbm(train: pd.DataFrame, test: pd.DataFrame, cfg) -> np.ndarray:
    """One default LGBMClassifier per label on the table's columns (text left out, text columns as categories);
    returns (rows, labels) P(label)."""
    from lightgbm import LGBMClassifier

    labels = list(cfg.target)
    x, x_test = train.drop(columns=["id", cfg.text_col, *labels]), test.drop(columns=["id", cfg.text_col])
    for c in x.columns[~x.dtypes.map(pd.api.types.is_numeric_dtype)]:
        kind = pd.CategoricalDtype(x[c].dropna().unique())
        x[c], x_test[c] = x[c].astype(kind), x_test[c].astype(kind)
    fits = [LGBMClassifier(verbose=-1, n_jobs=2).fit(x, train[label]) for label in labels]
    return np.stack([m.predict_proba(x_test)[:, 1] for m in fits], axis=1)


def ovr_joined(train: pd.DataFrame, test: pd.DataFrame, cfg) -> np.ndarray:
    """`joined_anchor` per label (the other labels left out of its features)."""
    labels = list(cfg.target)
    cols = []
    for label in labels:
        one = OmegaConf.merge(cfg, {"target": label})
        cols.append(joined_anchor(train.drop(columns=[c for c in labels if c != label]), test, one)[:, 1])
    return np.stack(cols, axis=1)


def run_multilabel(demo: str, cfg, train: pd.DataFrame, test: pd.DataFrame, folder: Path) -> list[dict]:
    """A multilabel demo: its two anchors against the zoo's submission (one probability column per label)."""
    labels, metric = list(cfg.target), get_metric(cfg.metric, "multilabel")
    y = pd.read_csv(folder / "test_labels.csv")[labels].to_numpy(int)
    zoo, ours = zoo_scores(demo, metric), None
    if (ROOT / "outputs" / demo / "submission.csv").is_file():
        ids = pd.read_csv(folder / "test_labels.csv")["id"]
        ours = pd.read_csv(ROOT / "outputs" / demo / "submission.csv").set_index("id").loc[ids, labels].to_numpy()
    rows = []
    for name, fit in (("one-vs-rest lightgbm", ovr_lgbm), ("tfidf + onehot + logreg per label", ovr_joined)):
        print(f"== {demo}: {name}", flush=True)
        start = time.perf_counter()
        pred = fit(train, test, cfg)
        row = {"demo": demo, "metric": metric.name, "anchor": name, "anchor_test": metric(y, pred)}
        row |= {"anchor_seconds": round(time.perf_counter() - start, 1)} | zoo
        if ours is not None:
            row["zoo_gain"], row["zoo_gain_se"] = paired_bootstrap(metric, y, ours, pred)
        rows.append(row)
    return rows


def run_demo(demo: str, args) -> list[dict]:
    """Builds the demo if missing, runs its anchors, scores each on the held-out test labels (one row each)."""
    cfg = OmegaConf.load(ROOT / f"conf/data/{demo}.yaml")
    folder = ROOT / "data" / demo
    if not (folder / "test_labels.csv").is_file():
        export(demo, ROOT / "data")
    train, test = pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")
    if not isinstance(cfg.target, str):
        return run_multilabel(demo, cfg, train, test, folder)
    labels = pd.read_csv(folder / "test_labels.csv")[cfg.target]
    task = "regression" if "regression" in METRICS[cfg.metric].tasks else "multiclass"
    if task != "regression" and train[cfg.target].nunique() == 2:
        task = "binary"
    metric = get_metric(cfg.metric, task)
    zoo = zoo_scores(demo, metric)
    limit = zoo["zoo_seconds"] if np.isfinite(zoo["zoo_seconds"]) else args.time_limit
    # classes as the pipeline encodes them: sorted labels -> 0..K-1, probability columns in that order
    classes = np.sort(train[cfg.target].unique())
    y = labels.to_numpy(float) if task == "regression" else np.searchsorted(classes, labels)
    ours = submission_pred(demo, classes, task, cfg.get("positive_class"))
    rows = []
    for name, fit in anchors(cfg, train, test, task, limit):
        row = {"demo": demo, "metric": metric.name, "anchor": name, "anchor_test": np.nan, "anchor_seconds": np.nan}
        if name.startswith("autogluon") and args.skip_autogluon:
            rows.append(row | {"anchor": "autogluon (skipped)"} | zoo)
            continue
        print(f"== {demo}: {name}", flush=True)
        start = time.perf_counter()
        pred = fit()
        row |= {"anchor_test": metric(y, pred), "anchor_seconds": round(time.perf_counter() - start, 1)} | zoo
        if ours is not None:  # the zoo's submission against the anchor, paired on the same test rows
            row["zoo_gain"], row["zoo_gain_se"] = paired_bootstrap(metric, y, ours, pred)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", nargs="+", default=list(DEMOS), choices=list(DEMOS))
    parser.add_argument("--skip-autogluon", action="store_true", help="no AutoGluon runs (tabular and mixed demos)")
    parser.add_argument("--time-limit", type=float, default=900, help="AutoGluon seconds when zoo.json is absent")
    args = parser.parse_args()
    torch.set_num_threads(2)  # the machines this runs on have 2 cores; AutoGluon is capped at num_cpus=2 too
    table = pd.DataFrame([row for demo in args.demos for row in run_demo(demo, args)])
    path = ROOT / "outputs" / "anchors.csv"
    if path.is_file():
        old = pd.read_csv(path)
        table = pd.concat([old[~old["demo"].isin(table["demo"])], table], ignore_index=True)
    write_csv(table, path)
    print(table.to_string(index=False, na_rep="n/a", float_format=lambda v: f"{v:.5g}"))
    print(f"-> {path}")


if __name__ == "__main__":
    sys.exit(main())
