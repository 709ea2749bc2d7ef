"""Outgrowing one machine: the launchers give the same members, an Optuna study resumes to n_trials in all."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.search import best_trials, beyond_best, finished_trials, storage_url

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tabular", "trainer.max_epochs=2", "trainer.progress_bar=false", "cv.n_folds=2", "threads=1"]
# 4 LightGBM members: 2 seeds (bagging: they differ) x 2 learning rates. An sklearn head keeps every launched process
# free of Lightning's imports (most of a torch job's start-up); the same members byte for byte is the claim tested.
ZOO = ["model=tabular_lgbm", "seed=0,1", "model.head.estimator.learning_rate=0.05,0.2"]
LGBM = ["model.head.estimator.n_estimators=30", "model.head.estimator.min_child_samples=5"]
LAUNCHERS = {  # the overrides and the members each launcher trains
    "basic": [*ZOO, *LGBM],
    "joblib": [*ZOO, *LGBM, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],  # 2 workers: each runs a second job
    # a local Ray instance; without its dashboard, which starts more processes than the jobs and is not tested here
    "ray": [
        *ZOO,
        *LGBM,
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
    ],
    # every job a fresh process (~10 s of imports on 2 cores): one seed's 2 members show what 4 would
    "submitit_local": [
        "model=tabular_lgbm",
        "seed=0",
        "model.head.estimator.learning_rate=0.05,0.2",
        *LGBM,
        "hydra/launcher=submitit_local",
    ],
}


def train(comp, out: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "pipeline.train", "-m", "data=csv", f"data.train_csv={comp.train_csv}"]
    cmd += ["data.target=y", f"paths.output_dir={out}", *TINY, *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_every_launcher_gives_byte_identical_members(make_comp, tmp_path):
    """The same zoo through basic, joblib, Ray and submitit_local: the same members, byte for byte."""
    comp = make_comp(n_train=40)
    oofs = {}
    for name, args in LAUNCHERS.items():
        out = tmp_path / name
        train(comp, out, *args)
        oofs[name] = {p.parent.name: p.read_bytes() for p in sorted(out.glob("models/*/oof.csv"))}
    for name, members in oofs.items():
        assert members == {m: oofs["basic"].get(m) for m in members}, f"{name} differs from basic"
        assert len(members) == (2 if name == "submitit_local" else 4), name


def complete_trials(db: Path) -> int:
    if not db.is_file():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        except sqlite3.OperationalError:  # tables not created yet
            return 0


@pytest.mark.slow
def test_search_killed_half_way_ends_with_n_trials(make_comp, tmp_path):
    comp, out = make_comp(n_train=60), tmp_path / "out"
    search = ["search=optuna", "hydra.sweeper.n_trials=6", "model=tabular_lgbm", *LGBM]  # no Lightning imports
    search += ["model.head.estimator.learning_rate=tag(log, interval(0.01, 0.3))"]
    proc = train(comp, out, *search, wait=False)
    deadline = time.time() + 300
    while complete_trials(out / "optuna.db") < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # killed half way, maybe in the middle of a trial
    proc.wait()
    assert 3 <= complete_trials(out / "optuna.db") < 6
    train(comp, out, *search)
    assert finished_trials(storage_url(out), "search") == 6  # in one study, not 3 + 6
    best = best_trials(out, 6)["search"]
    assert len(best) == 6 and all((out / "models" / m / "metrics.json").is_file() for m in best)
    assert best_trials(out, 2)["search"] == best[:2]
    assert beyond_best(out, 2) == sorted(best[2:])


def test_finished_trials_ignores_trials_a_killed_sweep_left_running(tmp_path):
    import optuna

    storage = storage_url(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.1, 0.3):
        trial = study.ask()
        trial.set_user_attr("model_id", f"m{value}")
        study.tell(trial, value)
    study.ask()  # left running
    assert finished_trials(storage, "s") == 2
    again = optuna.load_study(study_name="s", storage=storage)  # a fresh view (storages cache trials)
    assert [t.state.name for t in again.get_trials()] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert finished_trials(storage, "absent") == 0
    assert best_trials(tmp_path, 1) == {"s": ["m0.3"]}
    assert beyond_best(tmp_path, 1) == ["m0.1"]


@pytest.mark.slow
def test_ddp_finetune_on_two_cpu_processes(make_comp, make_cfg, out_dir):
    """trainer.devices=2 trainer.strategy=ddp: each fold's fit runs in 2 spawned processes (gloo on the CPU)."""
    import numpy as np
    import pandas as pd

    from pipeline.prepare import prepare
    from pipeline.training.job import train_job

    comp = make_comp(n_train=24, n_test=6, images=True)
    cfg = make_cfg(
        comp,
        "model.backbone.name=resnet18",
        "model.backbone.weights=null",
        "model.backbone.input_size=16",
        "trainer.max_epochs=2",
        "trainer.batch_size=8",
        "trainer.progress_bar=false",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "cv.scheme=holdout",  # one fit: each spawns 2 processes that import torch and Lightning anew
        "cv.val_fraction=0.5",
        "threads=1",
    )
    prep = prepare(cfg)
    metrics = train_job(cfg, prep)
    folder = out_dir / "models" / metrics["model_id"]
    oof = pd.read_csv(folder / "oof.csv")
    assert list(oof["id"]) == list(comp.train["id"]) and list(oof.columns) == ["id", "no", "yes"]
    val = oof[["no", "yes"]].to_numpy()[prep.folds == 0]
    assert len(val) == 12 and np.isfinite(val).all() and np.allclose(val.sum(1), 1, atol=1e-5)
    assert metrics["epochs"] == [2] and len(pd.read_csv(folder / "history.csv")) == 2
