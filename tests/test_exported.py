"""Frozen backbones on the CPU embed through their ONNX export (pipeline/models/exported.py): close to torch, the
same numbers in training and predict, and torch where an export cannot be used."""

import logging
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import comp_cfg, write_comp

from pipeline.artifacts import CompetitionInfo, ModelFolder
from pipeline.errors import UserError
from pipeline.models import exported
from pipeline.prepare import prepare
from pipeline.training.job import train_job
from pipeline.training.predictor import predict_member

FAST = ["trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.batch_size=16", "cv.n_folds=2"]


def train(comp, out, tiny_bert, *overrides: str) -> tuple[ModelFolder, dict]:
    text = ["model=text", f"model.backbone.name={tiny_bert}", "data.max_length=16"]
    cfg = comp_cfg(comp, *FAST, *text, *overrides, out_dir=out)
    prep = prepare(cfg)
    folder = ModelFolder(prep.out_dir / "models" / train_job(cfg, prep)["model_id"])
    return folder, CompetitionInfo.read(prep.out_dir)


@pytest.fixture(scope="module")
def onnx_member(tmp_path_factory, tiny_bert):
    """(comp, folder, info): one text member embedded through ONNX, trained once for the tests that only read it;
    a test that changes it works on `copy_member`'s copy."""
    root = tmp_path_factory.mktemp("onnx")
    comp = write_comp(root, text=True)
    return comp, *train(comp, root / "out", tiny_bert)


def copy_member(folder: ModelFolder, dest) -> ModelFolder:
    """The member's whole output folder (competition files, cache, models) copied to `dest`."""
    shutil.copytree(folder.path.parent.parent, dest)
    return ModelFolder(dest / folder.path.relative_to(folder.path.parent.parent))


def embeddings(out) -> np.ndarray:
    (path,) = (out / "cache").glob("emb-*.npz")
    with np.load(path) as z:
        return np.concatenate([z["train"], z["test"]])


@pytest.mark.slow
def test_onnx_embeddings_are_torchs_within_rounding_and_predict_reads_the_same_export(onnx_member, tmp_path, tiny_bert):
    comp, folder, info = onnx_member
    out = folder.path.parent.parent
    train(comp, tmp_path / "torch", tiny_bert, "trainer.onnx=[]")
    state = folder.read_fold_model(0)[0]
    assert state["encoder"].startswith("cache/encoder-") and (out / state["encoder"]).is_file()
    assert state["tokenizer"].endswith("-16.json") and (out / state["tokenizer"]).is_file()
    assert "encoder" not in ModelFolder(next((tmp_path / "torch" / "models").iterdir())).read_fold_model(0)[0]
    np.testing.assert_allclose(embeddings(out), embeddings(tmp_path / "torch"), atol=1e-5)
    expected = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    got = predict_member(folder, info, comp.test).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, atol=1e-7, rtol=0)


@pytest.mark.slow
def test_predict_with_an_export_imports_no_transformers(onnx_member, tmp_path):
    comp, folder, info = onnx_member
    code = (
        "import sys, json, pandas as pd, pathlib\n"
        "from pipeline.artifacts import CompetitionInfo, ModelFolder\n"
        "from pipeline.training.predictor import predict_member\n"
        f"folder = ModelFolder(pathlib.Path({str(folder.path)!r}))\n"
        f"info = CompetitionInfo.read(pathlib.Path({str(folder.path.parent.parent)!r}))\n"
        f"pred = predict_member(folder, info, pd.read_csv({str(comp.test_csv)!r}))\n"
        "pd.DataFrame(pred).to_csv(sys.argv[1], index=False)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'timm'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, tmp_path / "p.csv"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    expected = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv").to_numpy().reshape(expected.shape), expected, atol=1e-7)


def test_a_tokenizer_that_differs_from_transformers_is_not_saved(tiny_bert, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["a short one", "a much longer text that the tokenizer truncates at eight tokens"]
    tokens = dict(tokenizer(texts, max_length=8, truncation=True, padding="max_length", return_tensors="pt"))
    saved = exported.save_tokenizer(tokenizer, 8, texts, tokens, tmp_path / "t.json")
    assert saved is not None and torch.equal(
        exported.FastTokenizer.load(saved)(texts, 8)["input_ids"], tokens["input_ids"]
    )
    tokens["input_ids"] = tokens["input_ids"].flip(1)
    assert exported.save_tokenizer(tokenizer, 8, texts, tokens, tmp_path / "u.json") is None
    assert not (tmp_path / "u.json").exists()


@pytest.mark.slow
def test_predict_exports_a_missing_encoder_again_with_the_same_numbers(onnx_member, tmp_path):
    comp, folder, info = onnx_member
    folder = copy_member(folder, tmp_path / "out")
    (tmp_path / "out" / folder.read_fold_model(0)[0]["encoder"]).unlink()
    expected = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    np.testing.assert_allclose(predict_member(folder, info, comp.test).reshape(expected.shape), expected, atol=1e-6)


def test_an_export_that_fails_leaves_torch_to_embed(make_comp, tmp_path, tiny_bert, monkeypatch, caplog):
    def unsupported(*args, **kwargs):
        raise RuntimeError("operator not supported")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    caplog.set_level(logging.WARNING)
    comp = make_comp(text=True)
    folder, info = train(comp, tmp_path / "out", tiny_bert)
    assert "ONNX export of the backbone failed (RuntimeError: operator not supported)" in caplog.text
    assert "encoder" not in folder.read_fold_model(0)[0] and not list((tmp_path / "out" / "cache").glob("*.onnx"))
    expected = pd.read_csv(folder.test).drop(columns="id").to_numpy()
    np.testing.assert_allclose(predict_member(folder, info, comp.test).reshape(expected.shape), expected, atol=1e-6)


def test_embeddings_torch_cached_earlier_are_used_as_they_are(make_comp, tmp_path, tiny_bert, caplog):
    comp = make_comp(text=True)
    train(comp, tmp_path / "out", tiny_bert, "trainer.onnx=[]")
    caplog.set_level(logging.INFO)
    folder, _ = train(comp, tmp_path / "out", tiny_bert, "model.head.type=linear")
    assert "cache hit" in caplog.text and "computing" not in caplog.text
    assert "encoder" not in folder.read_fold_model(0)[0] and not list((tmp_path / "out" / "cache").glob("*.onnx"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "image"])
def test_export_strays_from_torch_then_is_not_used(tmp_path, kind, monkeypatch, caplog):
    """An export whose outputs differ from torch's beyond rounding (here: the module changed after export)."""
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4)) if kind == "image" else None
    if kind == "text":
        module = TinyText()
    module(*exported.probe(kind, 8, 2, 16))
    original = exported.OnnxEncoder

    def shifted(path):
        encoder = original(path)
        forward = encoder.forward
        encoder.forward = lambda *x: forward(*x) + 1.0
        return encoder

    monkeypatch.setattr(exported, "OnnxEncoder", shifted)
    caplog.set_level(logging.WARNING)
    assert exported.export(module, kind, 8, tmp_path / "m.onnx") is None
    assert "differs from torch" in caplog.text and not (tmp_path / "m.onnx").exists()


class TinyText(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(100, 4)

    def forward(self, ids, mask):
        return (self.emb(ids) * mask.unsqueeze(-1)).sum(1)


@pytest.mark.slow
def test_predict_without_onnx_runtime_names_the_install(onnx_member, monkeypatch):
    import importlib.util

    comp, folder, info = onnx_member
    find_spec = importlib.util.find_spec
    missing = lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(UserError, match=r"embeds through its ONNX export .*encoder-.*\.onnx: pip install onnxruntime"):
        predict_member(folder, info, comp.test)
