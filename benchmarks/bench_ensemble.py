"""Benchmark of the ensemble stage: seconds and peak memory per step on synthetic member folders.

    .venv/bin/python benchmarks/bench_ensemble.py                       # 50 members x 100,000 rows x 10 classes
    .venv/bin/python benchmarks/bench_ensemble.py --members 10 --rows 20000 --classes 3 --metric logloss

Target (issue 4): the full size under 30 s and 4 GB. Writing the synthetic CSVs is not timed; they are kept in
--workdir and reused by later runs with the same sizes. Every step runs the stage's own functions on the real
config, exactly as `python -m pipeline.ensemble` does (method=auto: every method, each scored by nested CV).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from pipeline.artifacts import model_folder
from pipeline.data.contract import file_hash
from pipeline.ensembling.members import load_context, load_stack
from pipeline.ensembling.outputs import leaderboard, write_ensemble
from pipeline.ensembling.registry import build_methods
from pipeline.ensembling.scoring import choose, evaluate_members, evaluate_method
from pipeline.ensembling.submission import build_submission

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=50)
    p.add_argument("--rows", type=int, default=100_000, help="training rows (all out of fold)")
    p.add_argument("--test-rows", type=int, default=None, help="default: rows / 4 (an 80/20 split)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--metric", default="accuracy", help="accuracy | logloss | roc_auc (binary) | ...")
    p.add_argument("--method", default="auto", help="ensemble.method")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench_ensemble")
    return p.parse_args()


def _member(job: tuple) -> None:
    """Write one member: logits = its strength x the class it sees + its own noise."""
    folder, seen, seen_test, strength, seed, columns = job
    rng = np.random.default_rng(seed)
    for path, target, first_id in ((folder.oof, seen, 0), (folder.test, seen_test, len(seen))):
        k = len(columns)
        logits = strength * np.eye(k, dtype=np.float32)[target] + rng.standard_normal((len(target), k), np.float32)
        p = np.exp(logits)
        frame = pd.DataFrame(p / p.sum(axis=1, keepdims=True), columns=columns)
        frame.insert(0, "id", np.arange(first_id, first_id + len(target)))
        frame.to_csv(path, index=False, float_format="%.6g")
    folder.metrics.write_text(json.dumps({"folds_hash": "bench", "task": _task(len(columns))}))


def _seen(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The class every member sees: the target, except on 15 % hard rows where all see the same wrong class
    (errors no combination can fix: 50 members of 30-70 % accuracy average to about 85 %)."""
    hard = rng.random(len(y)) < 0.15
    return np.where(hard, (y + rng.integers(1, k, len(y))) % k, y)


def _task(k: int) -> str:
    return "binary" if k == 2 else "multiclass"


def write_competition(args: argparse.Namespace, root: Path) -> None:
    """The training stage's outputs for a synthetic competition (skipped when already there)."""
    n, n_test, k = args.rows, args.test_rows, args.classes
    marker = root / "sizes.json"
    sizes = {"members": args.members, "rows": n, "test_rows": n_test, "classes": k, "metric": args.metric, "v": 2}
    if marker.is_file() and json.loads(marker.read_text()) == sizes:
        return
    rng = np.random.default_rng(0)
    y, y_test = rng.integers(0, k, n), rng.integers(0, k, n_test)
    (root / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": np.arange(n), "label": y}).to_csv(root / "data" / "train.csv", index=False)
    pd.DataFrame({"id": np.arange(n, n + n_test)}).to_csv(root / "data" / "test.csv", index=False)
    pd.DataFrame({"id": np.arange(n, n + n_test), "label": y_test}).to_csv(
        root / "data" / "test_labels.csv", index=False
    )
    out = root / "out"
    out.mkdir(exist_ok=True)
    seen, seen_test = _seen(y, k, rng), _seen(y_test, k, rng)
    pd.DataFrame({"id": np.arange(n), "fold": np.arange(n) % 5}).to_csv(out / "folds.csv", index=False)
    (out / "folds.json").write_text(json.dumps({"folds_hash": "bench"}))
    info = {
        "task": _task(k),
        "metric": args.metric,
        "classes": list(range(k)),
        "id_col": "id",
        "target": "label",
        "train_csv": str(root / "data" / "train.csv"),
        "n_train": n,
        "n_test": n_test,
        "data_hash": file_hash(root / "data" / "train.csv"),
        "folds_hash": "bench",
        "sample_submission": None,
        "feature_cols": [],
        "image_col": None,
        "text_col": None,
    }
    (out / "competition.json").write_text(json.dumps(info))
    jobs = []
    for j in range(args.members):
        folder = model_folder(out, f"m{j:02d}")
        folder.path.mkdir(parents=True, exist_ok=True)
        strength = 1.0 + 1.5 * j / max(args.members - 1, 1)
        jobs.append((folder, seen, seen_test, strength, j + 1, [str(c) for c in range(k)]))
    with Pool() as pool:
        pool.map(_member, jobs)
    marker.write_text(json.dumps(sizes))


def peak_rss_mb(reset: bool = False) -> float:
    """The process's peak resident memory since the last reset (Linux /proc; NaN elsewhere).

    Not tracemalloc: tracing every allocation slowed the Python-heavy steps up to 8x (the heatmap: 0.7 s -> 6 s)."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the current RSS
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024


class Timer:
    """Wall seconds, CPU seconds (all threads; what a shared machine's load cannot inflate) and peak resident
    memory of the whole process during each step, as table rows."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float]] = []

    def step(self, name: str, fn, *args):
        peak_rss_mb(reset=True)
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.rows.append((name, wall, cpu, peak_rss_mb()))
        print(f"  {name:<28} {wall:7.2f} s", file=sys.stderr)
        return result


def run_stage(root: Path, method: str, timer: Timer) -> list:
    """The entry point's steps (pipeline/ensemble.py), each timed."""
    overrides = [
        "data=csv",
        f"data.train_csv={root / 'data' / 'train.csv'}",
        "data.target=label",
        f"paths.output_dir={root / 'out'}",
        f"ensemble.method={method}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("ensemble", overrides=overrides)
    ctx = timer.step("read competition + folds", load_context, root / "out", cfg.data)
    stack = timer.step("load + validate members", load_stack, ctx, cfg.ensemble)
    entries = timer.step("members' CV", evaluate_members, stack, ctx.metric, cfg.ensemble.n_jobs)
    for m in build_methods(cfg.ensemble, ctx, stack):
        step = f"{m.name} (nested CV + refit)"
        entries.append(timer.step(step, evaluate_method, m, stack, ctx.metric, cfg.ensemble.n_jobs))

    def outputs() -> None:
        chosen = choose(entries, ctx.metric, cfg.ensemble.select)
        board = leaderboard(entries, chosen, ctx.metric, with_test=True)
        write_ensemble(ctx, stack, entries, chosen, build_submission(chosen.test_pred, stack.test_ids, ctx), board)

    timer.step("outputs (submission, plots)", outputs)
    return entries


def main() -> None:
    args = parse_args()
    args.test_rows = args.test_rows or args.rows // 4
    print(f"writing synthetic members to {args.workdir} (not timed) ...", file=sys.stderr)
    write_competition(args, args.workdir)
    timer = Timer()
    entries = run_stage(args.workdir, args.method, timer)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"ensemble stage: {args.members} members x {args.rows:,} rows x {args.classes} classes "
        f"({args.test_rows:,} test rows), metric {args.metric}, method {args.method}; "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    print(f"{'step':<30} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    for name, wall, cpu, peak in timer.rows:
        print(f"{name:<30} {wall:8.2f} {cpu:8.2f} {peak:12.0f}")
    walls, cpus, peaks = zip(*(r[1:] for r in timer.rows), strict=True)
    print(f"{'total':<30} {sum(walls):8.2f} {sum(cpus):8.2f} {max(peaks):12.0f}")
    print(f"target: total under 30 s and peak under 4 GB ({max(peaks) / 1024:.2f} GB)")
    print(
        f"sanity: best member CV {max(e.score.cv_mean for e in entries if e.kind == 'member'):.4f}, "
        f"best method CV {max(e.score.cv_mean for e in entries if e.kind == 'method'):.4f} ({args.metric})"
    )


if __name__ == "__main__":
    main()
