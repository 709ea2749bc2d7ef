"""Training-stage benchmarks, measured side by side in one run (ratios, not timed assertions).

(a) seconds per training epoch of `full` finetuning through the pipeline (Lightning, our Net, our datasets)
    vs a plain PyTorch loop on the same model, data, batch size and optimizer (target: ratio <= 1.10);
(b) a zoo of 9 heads on one frozen backbone with the embedding cache vs recomputing the backbone per head
    (target: >= 5x faster).

    .venv/bin/python benchmarks/bench_train.py [--rows 640] [--epochs 3]
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

import pipeline  # noqa: F401  (config resolvers)
from pipeline.data.demos import export
from pipeline.models.backbones import build_backbone
from pipeline.prepare import prepare
from pipeline.training.fold_inputs import fold_datasets
from pipeline.training.job import fold_rows, train_job
from pipeline.training.loop import build_net

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    """Wall time of each training epoch's batches (first batch start to last batch end)."""

    def __init__(self):
        self.times, self._start = [], None

    def on_train_batch_start(self, trainer, module, batch, i):
        if i == 0:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, i):
        if i == trainer.num_training_batches - 1:
            self.times.append(time.perf_counter() - self._start)


def config(out: Path, rows_csv: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "data=mnist",
                "model=image",
                f"data.train_csv={rows_csv}",
                f"paths.output_dir={out}",
                "trainer.progress_bar=false",
                "model.augment.hflip=false",
                *overrides,
            ],
        )


def subset(n: int, tmp: Path) -> Path:
    """The first n rows of the MNIST demo (built if missing) as a competition of its own."""
    data = ROOT / "data"
    export("mnist", data)
    import pandas as pd

    d = tmp / "mnist_subset"
    d.mkdir()
    pd.read_csv(data / "mnist/train.csv").head(n).to_csv(d / "train.csv", index=False)
    pd.read_csv(data / "mnist/test.csv").head(n).to_csv(d / "test.csv", index=False)
    return d / "train.csv"


def pipeline_epochs(cfg, prep, ds, in_dim, epochs: int) -> list[float]:
    """Our Net in a Lightning Trainer (checkpointing and logging off: they are per-epoch, not per-step costs)."""
    torch.manual_seed(0)
    net = build_net(cfg, prep.comp, build_backbone("image", cfg.model.backbone), in_dim)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        deterministic=True,
    )
    trainer.fit(net, DataLoader(ds["train"], batch_size=cfg.trainer.batch_size, shuffle=True))
    return timer.times


def plain_epochs(cfg, prep, ds, in_dim, epochs: int) -> list[float]:
    """The same model, data, batch size and optimizer groups in a hand-written loop."""
    torch.manual_seed(0)
    net = build_net(cfg, prep.comp, build_backbone("image", cfg.model.backbone), in_dim)
    opt = torch.optim.Adam(
        [{"params": net.head.parameters(), "lr": 1e-3}, {"params": net.backbone.parameters(), "lr": 1e-4}],
        weight_decay=1e-5,
    )
    times = []
    for _ in range(epochs):
        net.train()
        start = time.perf_counter()
        for batch in DataLoader(ds["train"], batch_size=cfg.trainer.batch_size, shuffle=True):
            loss = net.compute_loss(net(batch), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


def bench_finetune(tmp: Path, rows_csv: Path, epochs: int, rounds: int = 2) -> tuple[float, float]:
    """Median s/epoch (the first epoch warms up kernels and is dropped); the sides alternate `rounds` times and
    the best round of each counts, so that load from other processes hits both alike."""
    cfg = config(tmp / "a", rows_csv, "model.finetune=full", "data.sample_submission=null")
    prep = prepare(cfg)
    _, rows = fold_rows(prep.folds)[0]
    inputs = fold_datasets(
        prep.comp, build_backbone("image", cfg.model.backbone), cfg, rows, prep.comp.y, tmp / "cache"
    )
    ds, in_dim = inputs.datasets, inputs.in_dim
    best = {"pipeline": float("inf"), "plain": float("inf")}
    for _ in range(rounds):
        for side, fn in (("pipeline", pipeline_epochs), ("plain", plain_epochs)):
            best[side] = min(best[side], float(np.median(fn(cfg, prep, ds, in_dim, epochs)[1:])))
    return best["pipeline"], best["plain"]


def bench_zoo(tmp: Path, rows_csv: Path, size: int) -> tuple[float, float]:
    """9 frozen-backbone jobs (3 head sizes x 3 seeds) with the shared cache vs with the cache cleared per job."""
    heads = [f"model.head.hidden={h}" for h in ("[64]", "[256]", "[512,256]")]
    specs = [(h, f"seed={s}") for h in heads for s in range(3)]
    times = {}
    for mode in ("cached", "recomputed"):
        out = tmp / mode
        start = time.perf_counter()
        for head, seed in specs:
            if mode == "recomputed":
                shutil.rmtree(out / "cache", ignore_errors=True)
            cfg = config(
                out,
                rows_csv,
                "model.finetune=frozen",
                f"model.backbone.input_size={size}",
                head,
                seed,
                "trainer.batch_size=256",
                "data.sample_submission=null",
            )
            train_job(cfg, prepare(cfg))
        times[mode] = time.perf_counter() - start
    return times["cached"], times["recomputed"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=640, help="training rows of the MNIST demo to use")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=224, help="(b): input size of the frozen backbone (224: native)")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the tiny heads' monitor warnings are noise here
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows_csv = subset(args.rows, tmp)
        pipe, plain = bench_finetune(tmp, rows_csv, args.epochs)
        cached, recomputed = bench_zoo(tmp, rows_csv, args.size)
    print(
        f"\ntraining benchmarks ({args.rows} MNIST train + {args.rows} test rows, {torch.get_num_threads()} threads;"
        f" (a) at 48 px, (b) at {args.size} px)"
    )
    print(f"{'measure':58} {'value':>10} {'target':>10}")
    print(f"{'(a) full finetune s/epoch: pipeline':58} {pipe:10.2f}")
    print(f"{'(a) full finetune s/epoch: plain PyTorch loop':58} {plain:10.2f}")
    print(f"{'(a) ratio pipeline / plain':58} {pipe / plain:10.3f} {'<= 1.10':>10}")
    print(f"{'(b) 9 frozen heads, s: embedding cache':58} {cached:10.1f}")
    print(f"{'(b) 9 frozen heads, s: backbone recomputed per head':58} {recomputed:10.1f}")
    print(f"{'(b) speed-up':58} {recomputed / cached:10.2f} {'>= 5':>10}")


if __name__ == "__main__":
    main()
