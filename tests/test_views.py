"""Every view reaches the learners: date columns expanded, high-cardinality categoricals count- and out-of-fold
target-encoded (a planted leak is caught), text statistics, and TF-IDF n-grams joined with the table, on a small
mixed competition (text + a timestamp + a many-level category + numbers), trained for real."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_cfg

from pipeline.data.contract import load_competition
from pipeline.data.dates import DateParts, date_format
from pipeline.errors import UserError
from pipeline.prepare import prepare
from pipeline.training.fold_inputs import fit_tabular
from pipeline.training.job import fold_rows, model_id, train_job

FAST = ["trainer.progress_bar=false", "cv.n_folds=3"]
LGBM_SMALL = ["model.head.estimator.n_estimators=60", "model.head.estimator.early_stopping_round=10"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread per fit


def mixed(root: Path, n: int = 300, seed: int = 0, leak_key: bool = False) -> Path:
    """A binary table whose signal lies in every view: a word in the text, the hour of a timestamp, the level of a
    120-level category, and a number. `leak_key`: a `key` column of ~3 rows a level and a target drawn at random."""
    rng = np.random.default_rng(seed)
    total = n + n // 4
    hour = rng.integers(0, 24, total)
    stamp = pd.Timestamp("2015-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 900, total), unit="D")
    stamp = stamp + pd.to_timedelta(hour, unit="h")
    level = rng.integers(0, 120, total)
    word = rng.choice(["great", "awful", "plain"], total)
    num = rng.normal(size=total)
    logit = 1.5 * (word == "great") - 1.5 * (word == "awful") + (hour >= 12) + 0.03 * (level - 60) + num
    y = rng.random(total) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame(
        {
            "id": np.arange(total),
            "text": [f"this one is {w} and Short {i % 7}!" for i, w in enumerate(word)],
            "created_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "shop": [f"shop{v}" for v in level],
            "num": num.round(4),
            "y": np.where(y, "yes", "no"),
        }
    )
    if leak_key:
        df["key"] = [f"k{i // 3}" for i in range(total)]
        df["y"] = np.where(rng.random(total) < 0.5, "yes", "no")
    root.mkdir(parents=True, exist_ok=True)
    df.iloc[:n].to_csv(root / "train.csv", index=False)
    df.iloc[n:].drop(columns="y").to_csv(root / "test.csv", index=False)
    return root / "train.csv"


def config(train_csv: Path, out: Path, *overrides: str):
    base = [f"data.train_csv={train_csv}", "data.target=y", "data.text_col=text", f"paths.output_dir={out}"]
    return build_cfg(*base, *FAST, *overrides)


def test_date_format_detection() -> None:
    assert date_format(pd.Series(["2013-12-10T20:00:00Z", "2014-01-02T03:04:05Z"])) == "ISO8601"
    assert date_format(pd.Series(["12/10/2013", "01/31/2014"])) == "%m/%d/%Y"
    for not_dates in (["red", "blue"], ["Jan", "Feb"], ["A1", "B2"], [1.5, 2.5]):
        assert date_format(pd.Series(not_dates)) is None


def test_dates_are_found_and_expanded(tmp_path):
    cfg = config(mixed(tmp_path / "c"), tmp_path / "out", "model=tabular_lgbm")
    comp = load_competition(cfg.data)
    assert comp.datetime_cols == {"created_at": "ISO8601"}
    parts = DateParts(("ISO8601",)).fit(comp.train[["created_at"]])
    names = list(parts.get_feature_names_out())
    assert {"created_at_hour", "created_at_dayofweek", "created_at_year", "created_at_elapsed_days"} <= set(names)
    assert "created_at_minute" not in names  # every timestamp is on the hour: a part that never varies is left out
    hours = parts.transform(comp.train[["created_at"]])[:, names.index("created_at_hour")]
    np.testing.assert_array_equal(hours, pd.to_datetime(comp.train["created_at"]).dt.hour)
    off = config(mixed(tmp_path / "c"), tmp_path / "out", "data.datetime_cols=[]")
    assert load_competition(off.data).datetime_cols == {}


def test_a_test_date_that_does_not_parse_is_one_line(tmp_path):
    train_csv = mixed(tmp_path / "c")
    test = pd.read_csv(train_csv.parent / "test.csv")
    test.loc[3, "created_at"] = "yesterday"
    test.to_csv(train_csv.parent / "test.csv", index=False)
    with pytest.raises(UserError, match=r"test.csv line 5: column 'created_at' holds 'yesterday', which does not"):
        load_competition(config(train_csv, tmp_path / "out").data)


def test_named_datetime_column_must_parse(tmp_path):
    cfg = config(mixed(tmp_path / "c"), tmp_path / "out", "data.datetime_cols=[shop]")
    with pytest.raises(UserError, match=r"column 'shop' \(data.datetime_cols\) does not parse as dates"):
        load_competition(cfg.data)


def first_fold_tabular(train_csv: Path, out: Path, *overrides: str):
    """(competition, fold 0's train rows, its `Tabular` features) as the training stage builds them."""
    cfg = config(train_csv, out, *overrides)
    prep = prepare(cfg)
    _, rows = fold_rows(prep.folds)[0]
    return prep.comp, rows["train"], fit_tabular(prep.comp, cfg.data, rows["train"])


def test_features_of_every_extra_view(tmp_path):
    view = ["data.high_card_encoding=target", "data.high_card_min_levels=50", "data.text_stats=true"]
    comp, _, tab = first_fold_tabular(mixed(tmp_path / "c"), tmp_path / "out", *view)
    names = tab.fitted.names
    assert "count__shop_count" in names and "target__shop" in names
    assert "text__text_log_chars" in names and "dates__created_at_hour" in names
    assert not any(n.startswith("cat__shop") for n in names)  # the many-level column left the one-hot block
    assert tab.train.shape == (len(comp.train), len(names)) and np.isfinite(tab.train).all()
    assert tab.test.shape == (len(comp.test), len(names)) and np.isfinite(tab.test).all()


def test_target_encoding_leaks_no_row_its_own_target(tmp_path):
    """A key of ~3 rows a level and a random target: a row's code computed with its own target follows that
    target (the planted leak: transform after fitting on the same rows); the cross-fitted codes do not."""
    view = ["data.feature_cols=[key]", "data.high_card_encoding=target", "data.high_card_min_levels=20"]
    comp, train_rows, tab = first_fold_tabular(mixed(tmp_path / "c", n=600, leak_key=True), tmp_path / "out", *view)
    y = comp.y
    code = tab.train[:, tab.fitted.names.index("target__key")]
    leaky = tab.fitted.transform(comp.train.iloc[train_rows])[:, tab.fitted.names.index("target__key")]
    assert np.corrcoef(leaky, y[train_rows])[0, 1] > 0.4  # the leak the test must catch
    assert abs(np.corrcoef(code[train_rows], y[train_rows])[0, 1]) < 0.15


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["model=text_tfidf", "data.high_card_encoding=target", "data.text_stats=true"],
        ["model=text_nb", "data.high_card_encoding=target"],
        ["model=text_lgbm", *LGBM_SMALL, "data.high_card_encoding=count"],
    ],
    ids=["tfidf_lr", "nb_lr", "tfidf_lgbm"],
)
def test_joined_members_train_and_see_both_views(tmp_path, overrides):
    """TF-IDF n-grams side by side with the table's features: the joined model beats its text-only twin."""
    train_csv = mixed(tmp_path / "c", n=400)
    joined = train_job(cfg := config(train_csv, tmp_path / "out", *overrides), prepare(cfg))
    alone = config(train_csv, tmp_path / "out", *overrides, "data.feature_cols=[]")
    text_only = train_job(alone, prepare(alone))
    assert joined["model_id"] != text_only["model_id"] == model_id(alone, "binary")
    assert joined["cv_score"] > text_only["cv_score"] + 0.02


def test_the_zoo_plans_joined_views_and_encodings_for_a_mixed_table(tmp_path):
    from pipeline.zoo.plan import high_cardinality, plan

    comp = prepare(config(mixed(tmp_path / "c"), tmp_path / "out")).comp
    assert high_cardinality(comp) == ["shop"]
    planned = [" ".join(m.overrides) for m in plan(comp, gpu=False, tt=[])]
    joined = [p for p in planned if p.split()[0] in ("model=text_nb", "model=text_lgbm") and "feature_cols" not in p]
    assert len(joined) == 2 and all("data.high_card_encoding=target" in p for p in joined)
    assert any(p.startswith("model=tabular_lgbm") and "high_card_encoding=target" in p for p in planned)
    assert all("data.text_stats=true" in p for p in planned if p.startswith("model=tabular"))


@pytest.mark.slow
def test_fusion_finetune_reads_text_and_table_together(tmp_path, tiny_bert):
    """The zoo's fusion member: the encoder finetuned at 1/10 LR with the tabular features (dates, counts, target
    codes, text statistics) beside its pooled output in one MLP head."""
    overrides = ["model=text_finetune", f"model.backbone.name={tiny_bert}", "data.max_length=16"]
    overrides += ["trainer.max_epochs=1", "trainer.batch_size=32", "cv.n_folds=2"]
    view = ["data.text_stats=true", "data.high_card_encoding=target"]
    cfg = config(mixed(tmp_path / "c", n=120), tmp_path / "out", *overrides, *view)
    metrics = train_job(cfg, prepare(cfg))
    folder = tmp_path / "out" / "models" / metrics["model_id"]
    from pipeline.artifacts import ModelFolder

    state, _ = ModelFolder(folder).read_fold_model(0)
    assert state["in_dim"] == 32 + len(state["tab"].names) > 32 + 10
    assert np.isfinite(pd.read_csv(folder / "oof.csv").iloc[:, 1:].to_numpy()).all()


def two_texts(train_csv: Path) -> Path:
    """The mixed table with its text split in two columns (`title`, `body`), a few bodies empty."""
    for name in ("train.csv", "test.csv"):
        df = pd.read_csv(train_csv.parent / name)
        words = df.pop("text").str.split(" ", n=3)
        df["title"], df["body"] = words.str[:3].str.join(" "), words.str[3]
        df.loc[df.index % 10 == 0, "body"] = None
        df.to_csv(train_csv.parent / name, index=False)
    return train_csv


@pytest.mark.slow
def test_several_text_columns_are_joined_and_predicted(tmp_path):
    from pipeline import predict

    train_csv = two_texts(mixed(tmp_path / "c"))
    base = [f"data.train_csv={train_csv}", "data.target=y", f"paths.output_dir={tmp_path / 'out'}", "data=csv"]
    texts = ["data.text_col=[title,body]"]
    cfg = build_cfg(*base, *FAST, *texts, "model=text_tfidf", "data.text_stats=true")
    prep = prepare(cfg)
    assert prep.comp.text_col == "title + body" and prep.comp.text_cols == ["title", "body"]
    assert "title" not in prep.comp.feature_cols and "body" not in prep.comp.feature_cols
    assert prep.comp.train["title + body"][0] == prep.comp.train["title"][0]  # an empty body is left out
    train_job(cfg, prep)
    from pipeline import ensemble

    ensemble.main(build_cfg(*base, *texts, entry="ensemble"))
    rows = pd.read_csv(train_csv.parent / "test.csv")
    out = tmp_path / "pred.csv"
    args = [*base, *texts, f"predict.test_csv={train_csv.parent / 'test.csv'}", f"predict.output={out}"]
    predict.main(build_cfg(*args, entry="predict"))
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(tmp_path / "out" / "submission.csv"), atol=1e-6)
    from pipeline.artifacts import CompetitionInfo

    info = CompetitionInfo.read(tmp_path / "out")
    bad = rows.assign(created_at=rows["created_at"].where(rows.index != 1, "soon"))
    with pytest.raises(UserError, match=r"rows.csv line 3: column 'created_at' holds 'soon', which does not parse"):
        predict.check_rows(bad, info, Path("rows.csv"), None, cfg.data)
    with pytest.raises(UserError, match=r"rows.csv lacks column 'body'"):
        predict.check_rows(rows.drop(columns="body"), info, Path("rows.csv"), None, cfg.data)
