"""Benchmark: `make predict` on a trained competition's own test file vs the time its training run spent predicting
those rows (issue target: predict <= 1.2x), side by side in one run.

    .venv/bin/python benchmarks/bench_predict.py --name ames       # after make train / make ensemble for it
    .venv/bin/python benchmarks/bench_predict.py --train ames --name ames-bench   # both sides in this one run
    .venv/bin/python benchmarks/bench_predict.py --train mnist --name mnist-onnx --overrides 'trainer.onnx=[text,image]'

The machine's speed drifts between sittings (mnist's same command: 22.8 s one day, 25 s another), and the training
side is what the training run measured: `--train <demo>` first trains the demo's zoo and ensemble into a new
outputs/<name>/ (`make train` + `make ensemble`), so that both sides are measured in this one run.

The training side is what the run recorded: each member's `test_seconds` in metrics.json (the fold models
predicting the test rows, summed over folds) plus, when a member of the ensemble reads frozen embeddings, the test
rows' share of the embedding passes in outputs/<name>/cache/ (computed once, shared by the heads). The predict side
is the whole command, start-up and reading the fold models included (the median of 3 runs, and the first); then, in
this process, the same prediction twice: cold (the members' libraries load on first use, as in the command) and
warm (libraries loaded, fold models read again from disk, embeddings recomputed): the warm time is the stage's own
work, what the training run's figure compares with best.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUNS = 3  # the command varies by ~0.5 s from run to run on these 2 cores: its median
sys.path.insert(0, str(ROOT))

from pipeline.artifacts import CompetitionInfo, model_folder  # noqa: E402
from pipeline.choices import is_frozen  # noqa: E402
from pipeline.ensembling.saved import load_ensemble  # noqa: E402
from pipeline.predict import predict_rows  # noqa: E402


def training_side(out_dir: Path) -> tuple[float, int]:
    """Seconds the training run spent predicting the test rows for the ensemble's members, and how many."""
    members = load_ensemble(out_dir)["members"]
    metrics = [model_folder(out_dir, m).read_metrics() for m in members]
    if any("test_seconds" not in m for m in metrics):
        sys.exit("these members were trained before test_seconds was recorded: retrain them (make train)")
    seconds = sum(m["test_seconds"] for m in metrics)
    if any(is_frozen(m) for m in metrics):
        for cache in (out_dir / "cache").glob("emb-*.npz"):
            with np.load(cache) as z:
                seconds += float(z["test_seconds"]) if "test_seconds" in z else 0.0
    return seconds, len(members)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="ames", help="a competition under outputs/ with a trained ensemble")
    p.add_argument("--train", metavar="DEMO", help="first train this demo's zoo and ensemble into outputs/<name>/")
    p.add_argument("--overrides", default="", help="with --train: more overrides, e.g. 'trainer.onnx=[text,image]'")
    args = p.parse_args()
    os.chdir(ROOT)  # the members' data paths (test file, image folder) are relative to the project
    out_dir = ROOT / "outputs" / args.name
    if args.train:
        if out_dir.exists():  # a rerun would skip its finished members: their times would be another sitting's
            sys.exit(f"--train needs a new name: {out_dir} exists (remove it or give another --name)")
        for stage in ("train", "ensemble"):
            extra = f" {args.overrides}" if stage == "train" and args.overrides else ""
            cmd = ["make", "-s", stage, f"ARGS=data={args.train} name={args.name}{extra}"]
            subprocess.run(cmd, check=True, cwd=ROOT)
    train_s, n = training_side(out_dir)
    info = CompetitionInfo.read(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pipeline.predict", f"name={args.name}", f"predict.output={tmp}/sub.csv"]
        runs = []
        for _ in range(RUNS):
            start = time.time()
            subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
            runs.append(time.time() - start)
        whole = float(np.median(runs))
        start = time.time()
        subprocess.run([sys.executable, "-m", "pipeline.predict", "--help"], check=True, cwd=ROOT, capture_output=True)
        startup = time.time() - start
    saved, test = load_ensemble(out_dir), pd.read_csv(info.test_csv)
    start = time.time()
    predict_rows(out_dir, info, saved, test, progress=False)
    cold = time.time() - start
    start = time.time()
    predict_rows(out_dir, info, saved, test, progress=False)
    warm = time.time() - start
    print(f"{args.name}: {n} members of the ensemble, {info.n_test} test rows")
    print(f"{'side':<52}{'seconds':>9}{'ratio':>8}")
    print(f"{'training run, predicting the test rows':<52}{train_s:>9.1f}{1.0:>8.2f}")
    for what, seconds in (
        (f"make predict (the whole command, median of {RUNS})", whole),
        ("make predict, its first run", runs[0]),
        ("make predict without start-up (--help time)", whole - startup),
        ("predicting in-process, libraries loading (cold)", cold),
        ("predicting in-process, libraries loaded (warm)", warm),
    ):
        print(f"{what:<52}{seconds:>9.1f}{seconds / train_s:>8.2f}")
    print("target: predict <= 1.2x the training run's time on the test rows")


if __name__ == "__main__":
    main()
