"""`make bundle`, then install-and-predict in a new virtual environment with no package index: the same numbers."""

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from conftest import build_cfg, comp_cfg
from omegaconf import OmegaConf

from pipeline import bundle, ensemble
from pipeline.prepare import prepare
from pipeline.training.job import train_job

FAST = ["trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.batch_size=16", "cv.n_folds=2"]


@pytest.mark.parametrize(
    ("kind", "finetune", "expected"),
    [
        ("image", "frozen", ("model.backbone.weights", "w.pth")),
        ("image", "full", None),  # the fold models hold every weight
        ("image", "probe_then_full", None),
        ("tabular", None, None),
    ],
)
def test_bundle_copies_the_weights_a_member_reads(kind, finetune, expected):
    cfg = OmegaConf.create({"model": {"kind": kind, "finetune": finetune, "backbone": {"weights": "w.pth"}}})
    assert bundle.weights_source(cfg) == expected


@pytest.mark.slow
def test_bundle_installs_offline_and_predicts_the_same(make_comp, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights)
    comp = make_comp(n_train=40, n_test=12, images=True)
    pd.DataFrame({"id": comp.test["id"], "y": 0.5}).to_csv(comp.dir / "sample_submission.csv", index=False)
    out = tmp_path / "out"
    image = ["model=image", "model.backbone.name=resnet18", f"model.backbone.weights={weights}"]
    frozen = [*image, "model.backbone.input_size=32", "model.finetune=frozen", "model.head.hidden=[8]"]
    for model in (["model=tabular_lgbm"], [*image, "model.backbone.input_size=32"], frozen):
        cfg = comp_cfg(comp, *FAST, *model, out_dir=out)
        train_job(cfg, prepare(cfg))
    data = ["data=csv", f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out}", "name=comp"]
    ensemble.main(build_cfg(*data, "ensemble.method=mean", entry="ensemble"))
    bundle.main(build_cfg(*data, entry="bundle"))
    dest = out / "bundle"
    assert (dest / "README.md").is_file() and len(list((dest / "wheels").glob("pipeline-*.whl"))) == 1
    (encoder,) = (dest / "outputs" / "comp" / "cache").glob("encoder-*.onnx")  # the frozen member's engine
    stamp = encoder.stat().st_mtime_ns
    weights.unlink()  # the bundle's copy must be the one loaded

    env_dir = tmp_path / "venv"
    venv.create(env_dir)  # without pip (ensurepip takes seconds): this environment's pip installs into it
    py = env_dir / "bin" / "python"
    deps = subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True)
    # this environment's packages stand in for the notebook image's (torch & co. installed, this project not)
    image = tmp_path / "image"
    image.mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if not entry.name.startswith(("pipeline", "__editable__", "_pipeline")):
            (image / entry.name).symlink_to(entry)
    (Path(deps.stdout.strip()) / "image.pth").write_text(f"{image}\n")
    offline = {**os.environ, "PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    install = [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-index", "--find-links"]
    install += [dest / "wheels", "pipeline"]
    subprocess.run(install, check=True, env=offline, cwd=tmp_path)
    predicted = tmp_path / "pred.csv"
    run = [env_dir / "bin" / "pipeline-predict", "name=comp", f"paths.output_dir={dest / 'outputs' / 'comp'}"]
    run += [f"predict.test_csv={comp.test_csv}", f"predict.output={predicted}", f"predict.image_dir={comp.images}"]
    result = subprocess.run(run, env=offline, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    where = [py, "-c", "import pipeline; print(pipeline.__file__)"]
    where = subprocess.run(where, env=offline, cwd=tmp_path, capture_output=True, text=True)
    assert str(env_dir) in where.stdout  # the installed wheel ran, not this checkout
    assert encoder.stat().st_mtime_ns == stamp  # read, not exported again
    expected = pd.read_csv(out / "submission.csv")
    pd.testing.assert_frame_equal(pd.read_csv(predicted), expected, atol=1e-6)
