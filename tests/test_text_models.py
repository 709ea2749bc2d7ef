"""Text members besides heads on a frozen encoder: TF-IDF + a linear model (`model=text_tfidf`), and full
finetunes with layer-wise LR decay (`model=text_finetune model.layer_decay=...`), on tiny real data and models."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import comp_cfg

from pipeline.data.tfidf import build_vectorizer, counted_tfidf, tfidf_features
from pipeline.errors import UserError
from pipeline.models.backbones import text_backbone
from pipeline.prepare import prepare
from pipeline.training.fold_inputs import fold_datasets
from pipeline.training.job import fold_rows, train_job
from pipeline.training.optim import param_groups

FAST = ["trainer.max_epochs=1", "trainer.progress_bar=false", "trainer.batch_size=16", "cv.n_folds=3"]
UNSEEN = "zqxv zqxv"  # no word or char_wb n-gram of it occurs in the fixture's sentences


def config(comp, tmp_path: Path, *overrides: str):
    """conftest's builder with outputs under `tmp_path/out`, 16 tokens a text, trained FAST."""
    return comp_cfg(comp, "data.max_length=16", *FAST, *overrides, out_dir=tmp_path / "out")


def run(cfg) -> tuple[dict, Path]:
    metrics = train_job(cfg, prepare(cfg))
    return metrics, Path(cfg.paths.output_dir) / "models" / metrics["model_id"]


def test_tfidf_is_fitted_on_the_fold_training_rows_only(make_comp, tmp_path):
    """Rows whose only words occur in validation and test rows get all-zero TF-IDF rows; the same words in two
    training rows (min_df=2) would enter the vocabulary and make them non-zero (the check can fail)."""
    cfg = config(make_comp(text=True), tmp_path, "model=text_tfidf")
    prep = prepare(cfg)
    comp, (_, rows) = prep.comp, fold_rows(prep.folds)[0]
    comp.train.loc[rows["val"], "text"] = UNSEEN
    comp.test["text"] = UNSEEN

    def tfidf(split: str):
        return fold_datasets(comp, None, cfg, rows, comp.y, tmp_path).datasets[split].arrays["tfidf"]

    assert tfidf("val").nnz == 0 and tfidf("test").nnz == 0
    assert tfidf("train").getnnz(axis=1).min() > 0
    comp.train.loc[rows["train"][:2], "text"] = UNSEEN  # now seen in training: the control
    assert tfidf("val").getnnz(axis=1).min() > 0 and tfidf("test").getnnz(axis=1).min() > 0


@pytest.mark.parametrize("labels", [("no", "yes"), (3, 7, 10), (0.5, 1.7, 2.25, 3.1, 4.8)])
def test_tfidf_member_trains_end_to_end(make_comp, tmp_path, labels):
    """Binary and multiclass with LogisticRegression; regression with the preset's Ridge (`head.regressor`)."""
    comp = make_comp(text=True, labels=labels)
    metrics, folder = run(config(comp, tmp_path, "model=text_tfidf"))
    head = "ridge" if metrics["task"] == "regression" else "logisticregression"
    assert metrics["model_id"].startswith(f"tfidf-{head}-s0-")
    oof, test = pd.read_csv(folder / "oof.csv"), pd.read_csv(folder / "test.csv")
    assert len(oof) == 40 and len(test) == 10 and np.isfinite(oof.iloc[:, 1:].to_numpy()).all()
    if metrics["task"] == "regression":
        assert list(oof.columns) == ["id", "prediction"] and oof["prediction"].std() > 0
    else:
        assert np.allclose(oof.iloc[:, 1:].sum(axis=1), 1) and np.allclose(test.iloc[:, 1:].sum(axis=1), 1)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["data.text_col=null"], "model.kind=tfidf needs a text column: set data.text_col"),
        (["model.head.type=linear"], "model.kind=tfidf needs model.head.type=sklearn"),
    ],
)
def test_tfidf_errors(make_comp, tmp_path, overrides, match):
    with pytest.raises(UserError, match=match):
        run(config(make_comp(text=True), tmp_path, "model=text_tfidf", *overrides))


def test_layer_decay_lowers_the_lr_from_the_top_layer_to_the_embeddings(make_comp, tmp_path, tiny_bert):
    cfg = config(make_comp(text=True), tmp_path, "model=text_finetune", f"model.backbone.name={tiny_bert}")
    backbone, head = text_backbone(cfg.model.backbone).module, torch.nn.Linear(32, 2)
    groups = param_groups(backbone, head, lr=1e-3, backbone_lr_mult=0.1, layer_decay=0.5)
    names = [g["name"] for g in groups]
    assert names == ["head", "backbone", "backbone_layer1", "backbone_layer0", "backbone_embeddings"]
    lrs = dict(zip(names, (g["lr"] for g in groups), strict=True))
    assert lrs["backbone"] == lrs["backbone_layer1"] == pytest.approx(1e-4)  # the pooler sits at the top
    assert lrs["backbone_layer0"] == pytest.approx(5e-5) and lrs["backbone_embeddings"] == pytest.approx(2.5e-5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(backbone.parameters())) + len(list(head.parameters()))
    assert [g["name"] for g in param_groups(backbone, head, 1e-3, 0.1)] == ["head", "backbone"]


@pytest.mark.parametrize(
    "module, decay, match",
    [
        (torch.nn.Sequential(torch.nn.Linear(2, 2)), 0.8, "needs a transformer encoder with numbered layers"),
        (torch.nn.Linear(2, 2), 1.5, r"model.layer_decay=1.5: expected a factor in \(0, 1\]"),
    ],
)
def test_layer_decay_errors(module, decay, match):
    with pytest.raises(UserError, match=match):
        param_groups(module, torch.nn.Linear(2, 2), 1e-3, 0.1, decay)


def test_finetune_with_layer_decay_logs_every_group_lr(make_comp, tmp_path, tiny_bert):
    overrides = ["model=text_finetune", f"model.backbone.name={tiny_bert}", "model.layer_decay=0.5", "cv.n_folds=2"]
    metrics, folder = run(config(make_comp(text=True), tmp_path, *overrides))
    hist = pd.read_csv(folder / "history.csv")
    top, low, emb = (hist[f"lr_backbone_{g}"] for g in ("layer1", "layer0", "embeddings"))
    assert np.allclose(top, hist["lr_head"] * 0.1) and np.allclose(low, top * 0.5) and np.allclose(emb, top * 0.25)
    assert "-full-mlp256-s0-" in metrics["model_id"]


def test_nb_lr_scales_each_column_by_its_log_count_ratio():
    """The ratios by hand on a 4-row matrix, probabilities that sum to one, and a column seen only in one class's
    rows pulling its rows toward that class (binary and one-vs-rest)."""
    from scipy import sparse

    from pipeline.models.linear import NBLogisticRegression

    x = sparse.csr_matrix(np.array([[1.0, 0, 2], [3, 0, 0], [0, 1, 1], [0, 2, 0]]))
    y = np.array([1, 1, 0, 0])
    nb = NBLogisticRegression(C=10.0).fit(x, y)
    p, q = np.array([1 + 2, 1 + 0, 1 + 1]), np.array([1 + 0, 1 + 2, 1 + 1])  # alpha 1 + rows where non-zero
    assert np.allclose(nb.ratios_[0], np.log(p / p.sum()) - np.log(q / q.sum()))
    proba = nb.predict_proba(x)
    assert np.allclose(proba.sum(1), 1) and (nb.predict(x) == y).all()
    y3 = np.array([0, 1, 2, 2, 1, 0])
    x3 = sparse.csr_matrix(np.c_[np.eye(3)[y3], np.ones(6)])  # column k: non-zero in class k's rows only
    nb3 = NBLogisticRegression(C=10.0).fit(x3, y3)
    assert nb3.ratios_.shape == (3, 4) and (np.argmax(nb3.ratios_, axis=1) == [0, 1, 2]).all()
    assert np.allclose(nb3.predict_proba(x3).sum(1), 1) and (nb3.predict(x3) == y3).all()


@pytest.mark.parametrize("labels", [("no", "yes"), (3, 7, 10)])
def test_nb_member_trains_end_to_end(make_comp, tmp_path, labels):
    metrics, folder = run(config(make_comp(text=True, labels=labels), tmp_path, "model=text_nb"))
    assert metrics["model_id"].startswith("tfidf-nblogisticregression-s0-")
    test = pd.read_csv(folder / "test.csv")
    assert np.allclose(test.iloc[:, 1:].sum(axis=1), 1) and test.iloc[:, 1:].std().min() > 0


@pytest.mark.parametrize("binary", [False, True])
def test_counted_tfidf_is_the_vectorizers_own_transform_bit_for_bit(binary):
    """Predict counts the rows' n-grams once and maps them to each fold's vocabulary: the same matrix as
    `transform`, and a vectorizer that splits text alike (other vocabulary settings) reuses the counts."""
    texts = pd.Series(["A good film.", "a bad, BAD film", None, "good good fun", UNSEEN, "", "fun film"])
    counted, fitted = {}, []
    for settings in ({"min_df": 1}, {"min_df": 1, "max_features": 5, "sublinear_tf": False}):
        v = build_vectorizer(**settings).set_params(word__binary=binary, char__binary=binary)
        tfidf_features(v, texts, train_rows=np.arange(4))
        got, want = counted_tfidf(v, texts, counted), v.transform(texts.fillna("").astype(str)).tocsr()
        assert got.shape == want.shape and (got.indptr == want.indptr).all() and (got.indices == want.indices).all()
        assert (got.data == want.data).all()
        fitted.append(v)
    assert len(counted) == 2  # word and char_wb n-grams, counted once for both vectorizers
    assert counted_tfidf(fitted[0], texts[4:5], {}).nnz == 0  # n-grams no fold has seen: an empty row
