"""The stages as commands: light to start (no torch until work starts), with a help that lists the main keys."""

import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_scripts_point_at_entry_points(script):
    module, func = SCRIPTS[script].split(":")
    assert callable(getattr(import_module(module), func))


def test_entry_points_load_no_heavy_library():
    """`--help` (and a bad key's one-line error) comes before torch, Lightning or scikit-learn load."""
    modules = sorted({s.split(":")[0] for s in SCRIPTS.values()})
    heavy = "('torch', 'lightning', 'sklearn')"
    code = f"import sys; import {', '.join(modules)}; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_predicting_loads_no_training_stack():
    """Predict (the stage's code, the sklearn-API heads' module, and the torch models' `inference.Model`) loads
    neither Lightning nor torchvision, timm or transformers: backbones come with the members that need them, and
    Lightning only trains."""
    modules = "pipeline.training.predictor, pipeline.training.estimators, pipeline.training.inference"
    modules += ", pipeline.ensembling.saved"
    heavy = "('lightning', 'torchvision', 'timm', 'transformers')"
    code = f"import sys; import {modules}; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "key"), [("train", "model.finetune"), ("predict", "predict.test_csv")])
def test_help_lists_groups_and_main_keys(stage, key):
    out = subprocess.run(
        [sys.executable, "-m", f"pipeline.{stage}", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "== Config groups" in out.stdout and "== Main keys ==" in out.stdout and key in out.stdout
