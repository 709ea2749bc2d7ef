"""The config advisor: every rule fires on a crafted config and stays quiet on the shipped presets."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from pipeline.advisor.rules import advise_after, check, check_history, enforce, read_advice, swept_keys
from pipeline.artifacts import ModelFolder
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


@pytest.fixture(scope="module")
def cfg():
    """Compose the real `train` config (with its hydra section, for the presets' sweeps) with overrides."""

    def make(*overrides: str):
        chosen = any(o.startswith(("model=", "experiment=")) for o in overrides)
        base = [] if chosen else ["model=image"]  # the rules are about a network's config (the default is auto)
        return compose("train", overrides=[*base, *overrides], return_hydra_config=True)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield make


def rules(c, swept=()) -> list[str]:
    return [f.rule for f in check(c, swept)]


def preset_sweep(c) -> list[str]:
    params = c.hydra.sweeper.get("params")
    return swept_keys([], dict(params) if params else None)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=mnist"],
        ["experiment=mnist_finetune"],
        ["experiment=adult"],
        ["experiment=rotten"],
        ["model=tabular", "optimizer=lbfgs"],  # full batch on arrays: fine
        ["optimizer=sgd"],  # Nesterov momentum
        ["optimizer=adamw", "scheduler=cosine"],
        ["cv.scheme=holdout", "cv.val_fraction=0.25"],
        ["+model.head.init=kaiming"],
    ],
)
def test_sane_configs_have_no_findings(cfg, overrides):
    c = cfg(*overrides)
    assert check(c, preset_sweep(c)) == []


@pytest.mark.parametrize(
    "overrides, rule",
    [
        (["+model.head.init=zeros"], "zero_init"),
        (["+model.head.init=constant"], "zero_init"),
        (["model.head.activation=sigmoid"], "sigmoid_hidden"),
        (["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=false"], "sgd_plain"),
        (["optimizer.lr=1e-6"], "lr_range"),
        (["optimizer=adamw", "optimizer.lr=0.1"], "lr_range"),
        (["model.head.dropout=0.3"], "dropout_with_batch_norm"),
        (["model.backbone_lr_mult=1.0"], "backbone_lr"),
        (["model.finetune=probe_then_full", "model.backbone_lr_mult=2"], "backbone_lr"),
        (["optimizer=lbfgs"], "lbfgs_minibatch"),
        (["model=text", "model.finetune=full", "optimizer=lbfgs"], "lbfgs_minibatch"),
        (["cv.scheme=holdout", "cv.val_fraction=0.1"], "holdout_fraction"),
        (["cv.scheme=holdout", "cv.val_fraction=0.5"], "holdout_fraction"),
    ],
)
def test_each_rule_fires_on_its_crafted_config(cfg, overrides, rule):
    findings = check(cfg(*overrides))
    assert [f.rule for f in findings] == [rule]
    f = findings[0]
    assert f.why and f.fix and f.rule in str(f) and "Fix:" in str(f)


def test_rules_that_do_not_apply_stay_quiet(cfg):
    """Random-init backbones may take the full LR; SGD with a schedule is fine; sklearn heads ignore the optimizer."""
    assert rules(cfg("model.backbone.weights=null", "model.backbone_lr_mult=1")) == []
    assert rules(cfg("optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=false", "scheduler=cosine")) == []
    assert rules(cfg("model=tabular_hgb", "optimizer.lr=1e-7")) == []
    assert rules(cfg("model=text", "optimizer=lbfgs")) == []  # frozen: full batch of cached embeddings


def test_sweep_of_more_than_three_hyperparameters(cfg):
    swept = swept_keys(
        ["optimizer.lr=1e-4,1e-3", "model.head.dropout=0,0.1", "trainer.batch_size=32", "seed=0,1,2"],
        {"model.head.hidden": "[256],[512,256]", "optimizer.weight_decay": "range(0,3)"},
    )
    assert swept == ["model.head.dropout", "model.head.hidden", "optimizer.lr", "optimizer.weight_decay"]
    assert rules(cfg(), swept) == ["sweep_size"]
    assert rules(cfg(), swept[:3]) == []


def test_ignore_and_strict(cfg):
    assert rules(cfg("optimizer.lr=1e-6", "advisor.ignore=[lr_range]")) == []
    c = cfg("optimizer.lr=1e-6", "advisor.strict=true")
    with pytest.raises(UserError, match=r"advisor.strict=true: 1 finding\(s\) in the config \(lr_range\)"):
        enforce(c, check(c), "in the config")
    enforce(cfg("optimizer.lr=1e-6"), check(cfg("optimizer.lr=1e-6")), "in the config")  # warns only


def history(train: list[float], val: list[float], folds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"fold": k, "epoch": e, "train_loss": t * (1 + 0.01 * rng.normal()), "val_loss": v * (1 + 0.01 * rng.normal())}
        for k in range(folds)
        for e, (t, v) in enumerate(zip(train, val, strict=True))
    ]
    return pd.DataFrame(rows)


GOOD = history([1.0, 0.7, 0.55, 0.5, 0.48, 0.47, 0.47], [0.9, 0.7, 0.6, 0.56, 0.55, 0.55, 0.55])
OVERFIT = history([1.0, 0.6, 0.3, 0.15, 0.08, 0.04, 0.02], [0.9, 0.7, 0.65, 0.7, 0.8, 0.95, 1.1])


def test_regularization_without_overfitting(cfg, tmp_path):
    c = cfg("model.head.dropout=0.3", "model.head.batch_norm=false", "model.l1=1e-4")
    (f,) = check_history(c, GOOD)
    assert f.rule == "needless_regularization" and "model.head.dropout=0" in f.fix and "model.l1=0" in f.fix
    assert check_history(c, OVERFIT) == []  # overfitting shows: the regularization is warranted
    assert check_history(cfg(), GOOD) == []  # nothing switched on
    assert [x.rule for x in check_history(cfg("optimizer.weight_decay=0.01"), GOOD)] == ["needless_regularization"]
    assert check_history(cfg("optimizer=adamw"), GOOD) == []  # AdamW's default decoupled decay is not "large"
    GOOD.to_csv(tmp_path / "history.csv", index=False)
    after = advise_after(c, ModelFolder(tmp_path), check(c))
    assert [x.rule for x in after] == ["needless_regularization"]
    assert read_advice(ModelFolder(tmp_path))["after"][0]["rule"] == "needless_regularization"


def run_advise(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.advise", *args, f"paths.output_dir={tmp_path}"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.slow
def test_cli_reads_command_line_sweeps_and_strict_exits_2(tmp_path):
    """A multirun job sees only its own values; the advisor reads the sweep as typed (multirun.yaml)."""
    sweep = ["optimizer.lr=1e-4,1e-3", "model.head.dropout=0,0.1", "trainer.batch_size=32,64", "model.l1=0,1e-5"]
    res = run_advise(tmp_path, "-m", "model=image", "model.head.batch_norm=false", "advisor.strict=true", *sweep)
    assert res.returncode == 2, res.stderr
    assert "sweep_size: 4 hyperparameters swept at once" in res.stdout
    assert "error: advisor.strict=true: 1 finding(s) in the config (sweep_size)" in res.stderr
