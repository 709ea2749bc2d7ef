"""Peak memory of an image competition vs one --scale times larger (target: grows <= 1.2x).

Images are read from disk a batch at a time (the pipeline's lazy ImageDataset), so memory should not follow the
number of images; what does is whatever holds one row per image (tables, embeddings, predictions). Each run is a
fresh `python -m pipeline.train` process; its peak resident memory is read by a wrapper process
(`ru_maxrss` of its one child). Competitions are MNIST demo rows repeated under new ids (the same PNG files).

    .venv/bin/python benchmarks/bench_memory.py [--rows 1000] [--scale 4]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "frozen head (cached embeddings)": ["model.finetune=frozen", "model.backbone.input_size=64"],
    "finetune": ["model.finetune=full", "model.backbone.input_size=32", "trainer.max_epochs=1"],
}
PEAK = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
PEAK += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def competition(rows: int, folder: Path) -> Path:
    """`rows` training rows and rows / 4 test rows from the MNIST demo, repeated as needed under new ids."""
    src = ROOT / "data" / "mnist"
    folder.mkdir(parents=True)
    for name, n in (("train", rows), ("test", rows // 4)):
        df = pd.read_csv(src / f"{name}.csv")
        df = pd.concat([df] * (n // len(df) + 1), ignore_index=True).head(n)
        df.assign(id=range(n) if name == "train" else range(10**7, 10**7 + n)).to_csv(
            folder / f"{name}.csv", index=False
        )
    return folder / "train.csv"


def peak_mb(train_csv: Path, out: Path, mode: list[str]) -> float:
    cmd = [sys.executable, "-m", "pipeline.train", "data=mnist", "model=image", f"data.train_csv={train_csv}"]
    cmd += [f"data.image_dir={ROOT / 'data/mnist/images'}", "data.sample_submission=null", f"paths.output_dir={out}"]
    cmd += ["cv.n_folds=2", "trainer.progress_bar=false", *mode]
    done = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True, cwd=ROOT, check=True)
    return int(done.stdout.split()[-1]) / 1024  # KiB -> MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--scale", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sizes = {n: competition(n, tmp / f"comp{n}") for n in (args.rows, args.rows * args.scale)}
        print(f"{'mode':34} {'rows':>7} {'peak MiB':>9}")
        for mode, overrides in MODES.items():
            peaks = []
            for n, csv in sizes.items():
                peaks.append(peak_mb(csv, tmp / f"out-{n}-{len(peaks)}-{mode[:6]}", overrides))
                print(f"{mode:34} {n:7d} {peaks[-1]:9.0f}")
            print(f"{mode:34} {'growth':>7} {peaks[1] / peaks[0]:9.2f}x  (target <= 1.2x)")


if __name__ == "__main__":
    main()
