"""GPU finetune throughput: the pipeline's Lightning finetune vs a plain PyTorch loop on the same GPU.

Both sides train the same model (EfficientNet-Lite0 on ImageNet weights + the pipeline's MLP head) on fold 0 of
the MNIST demo, read from PNG files by the pipeline's dataset at --size px, with the same loader (the GPU
defaults: workers, pinned memory), batch, optimizer groups (backbone at 1/10 LR) and precision (bf16-mixed where
the card has bf16). The pipeline side is our Net in a Lightning Trainer with the pipeline's per-step callbacks (the
monitors); checkpoints, validation and logging are per-epoch costs and left out, as in bench_train.py.
images/s counts training images over the epochs after the first (warm-up); the sides alternate --rounds times
and the best round of each counts. On a CPU (no GPU) it runs the same code as a smoke test.

    python benchmarks/bench_gpu.py [--rows 4000] [--size 160] [--batch 64] [--epochs 4]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import config, subset  # noqa: E402

from pipeline.models.backbones import build_backbone  # noqa: E402
from pipeline.prepare import prepare  # noqa: E402
from pipeline.training.fold_inputs import fold_datasets  # noqa: E402
from pipeline.training.job import fold_rows  # noqa: E402
from pipeline.training.loaders import loader  # noqa: E402
from pipeline.training.loop import build_net  # noqa: E402
from pipeline.training.monitors import build_monitors  # noqa: E402

GPU = torch.cuda.is_available()


def sync() -> float:
    if GPU:
        torch.cuda.synchronize()  # the GPU's queued work is part of the time
    return time.perf_counter()


class EpochTimer(L.Callback):
    def __init__(self):
        self.times, self._start = [], None

    def on_train_epoch_start(self, trainer, module):
        self._start = sync()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(sync() - self._start)


def lightning_epochs(cfg, comp, ds, in_dim, epochs: int, monitors: bool) -> list[float]:
    torch.manual_seed(0)
    net = build_net(cfg, comp, build_backbone("image", cfg.model.backbone), in_dim)
    t, timer = cfg.trainer, EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=t.accelerator,
        devices=1,
        precision=t.precision,
        deterministic=t.deterministic,
        callbacks=[timer, *(build_monitors(cfg.monitors) if monitors else [])],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    net.train()
    trainer.fit(net, loader(ds["train"], t.batch_size, True, t.num_workers))
    return timer.times


def plain_epochs(cfg, comp, ds, in_dim, epochs: int) -> list[float]:
    """The same Net, data, loader, precision and optimizer groups in a hand-written loop."""
    torch.manual_seed(0)
    device = torch.device("cuda" if GPU else "cpu")
    net = build_net(cfg, comp, build_backbone("image", cfg.model.backbone), in_dim).to(device)
    lr, t = cfg.optimizer.lr, cfg.trainer
    groups = [
        {"params": net.head.parameters(), "lr": lr},
        {"params": net.backbone.parameters(), "lr": lr * cfg.model.backbone_lr_mult},
    ]
    opt = torch.optim.Adam(groups, weight_decay=cfg.optimizer.weight_decay)
    dtype = torch.bfloat16 if "bf16" in t.precision else torch.float16
    mixed = "mixed" in t.precision
    scaler = torch.amp.GradScaler(enabled=mixed and dtype == torch.float16)
    data = loader(ds["train"], t.batch_size, True, t.num_workers)
    times = []
    net.train()
    for _ in range(epochs):
        start = sync()
        for batch in data:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=mixed):
                loss = net.compute_loss(net(batch), batch["y"])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        times.append(sync() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4000, help="training rows of the MNIST demo (fold 0 trains 80 %%)")
    ap.add_argument("--size", type=int, default=160, help="input size (the auto zoo's GPU finetune size)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        overrides = [f"model.backbone.input_size={args.size}", f"trainer.batch_size={args.batch}"]
        cfg = config(
            tmp / "out",
            subset(args.rows, tmp),
            "model=image",
            "model.finetune=full",
            "data.sample_submission=null",
            *overrides,
        )
        prep = prepare(cfg)
        _, rows = fold_rows(prep.folds)[0]
        backbone = build_backbone("image", cfg.model.backbone)
        inputs = fold_datasets(prep.comp, backbone, cfg, rows, prep.comp.y, tmp / "cache")
        ds, in_dim = inputs.datasets, inputs.in_dim
        sides = {
            "plain PyTorch loop": lambda: plain_epochs(cfg, prep.comp, ds, in_dim, args.epochs),
            "pipeline (Lightning + monitors)": lambda: lightning_epochs(cfg, prep.comp, ds, in_dim, args.epochs, True),
            "pipeline, monitors off": lambda: lightning_epochs(cfg, prep.comp, ds, in_dim, args.epochs, False),
        }
        best = dict.fromkeys(sides, float("inf"))
        for _ in range(args.rounds):
            for side, run in sides.items():
                best[side] = min(best[side], float(np.median(run()[1:])))
    n, t = len(ds["train"]), cfg.trainer
    name = torch.cuda.get_device_name() if GPU else "CPU"
    print(f"\nGPU finetune benchmark on {name}: torch {torch.__version__}, lightning {L.__version__}")
    print(f"{n} images/epoch at {args.size} px, batch {args.batch}, {t.precision}, {t.num_workers} loader workers")
    plain = n / best["plain PyTorch loop"]
    for side, seconds in best.items():
        print(f"{side:34} {n / seconds:9.0f} images/s  ({seconds:.3f} s/epoch)  ratio {plain * seconds / n:.3f}")


if __name__ == "__main__":
    main()
