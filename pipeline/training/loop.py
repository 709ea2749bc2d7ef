"""One fold: fit the model on the fold's training rows with early stopping, restore the best checkpoint,
predict the fold's validation rows (out of fold) and the test rows."""

import logging
import shutil
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from pipeline.choices import Finetune
from pipeline.data.contract import Competition
from pipeline.models.backbones import Backbone
from pipeline.training.ddp import fit_strategy, unsharded
from pipeline.training.devices import n_devices, per_device_batch
from pipeline.training.inference import head_and_loss, predict_loader, predict_net, trainable
from pipeline.training.loaders import ArrayDataset, array_loader, length_order, loader
from pipeline.training.module import Net
from pipeline.training.monitors import build_monitors
from pipeline.training.optim import build_mixup

log = logging.getLogger(__name__)
# Lightning's tips, device banners and hints about worker counts / logging intervals are noise here, as are the LR
# finder's (no validation, no epoch limit: it runs a number of steps)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
NOISE = (".*does not have many workers.*", ".*smaller than the logging interval.*", ".*LeafSpec.*")
for pattern in (*NOISE, ".*no `val_dataloader`.*", ".*`max_epochs` was not set.*"):
    warnings.filterwarnings("ignore", pattern)


def make_loaders(cfg, datasets: dict) -> dict:
    """Array datasets batch by index (large batches; L-BFGS gets the full batch); others per row."""
    t = cfg.trainer
    if isinstance(datasets["train"], ArrayDataset):
        full = cfg.optimizer._target_.endswith("LBFGS")  # L-BFGS is a full-batch method
        train = array_loader(datasets["train"].arrays, len(datasets["train"]) if full else t.batch_size, True)
    else:
        train = loader(datasets["train"], per_device_batch(t), True, t.num_workers)
    return {"train": train, "val": predict_loader(cfg, datasets["val"], length_order(datasets["val"]))}


def build_net(cfg, comp: Competition, backbone: Backbone | None, in_dim: int) -> Net:
    m = cfg.model
    head, loss = head_and_loss(cfg, comp, in_dim)
    mixup = build_mixup(m, len(comp.classes or ()), loss)
    return Net(
        head,
        loss,
        comp.metric,
        hydra.utils.instantiate(cfg.optimizer),
        cfg.scheduler,
        backbone=trainable(cfg, backbone),
        backbone_lr_mult=m.backbone_lr_mult,
        probe_epochs=m.probe_epochs if m.finetune == Finetune.PROBE_THEN_FULL else 0,
        l1=m.l1,
        tta=m.tta,
        layer_decay=m.get("layer_decay"),  # in model=text_finetune; absent from older presets (keeps their ids)
        mixup=mixup,
        train_sizes=m.get("train_sizes") or (),  # absent from older saved configs
    )


def ema(decay: float) -> WeightAveraging:
    """Lightning's weight averaging with an exponential moving average whose decay warms up as timm's does:
    min(decay, (1 + n) / (10 + n)) after n updates. A short CPU finetune takes a few hundred steps; a fixed 0.999
    would keep ~80 % of the pretrained (or probe-phase) weights after 200 of them."""

    def average(avg: list[torch.Tensor], new: list[torch.Tensor], n: torch.Tensor) -> None:
        n = n.item()  # one read a step, for the whole model
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(avg, new, n)

    return WeightAveraging(multi_avg_fn=average)


def find_lr(cfg, net: Net, train: DataLoader, k: int, root: Path) -> float | None:
    """Lightning's LR range test (`Tuner.lr_find`: 100 training steps at exponentially growing LRs from 1e-8 to 1, on
    a throwaway trainer, no validation; its temporary checkpoint goes to `root`, and the weights are restored after)
    sets `net.lr` to `min_loss_lr` of its losses. Every parameter group takes the same LR during the test, the
    backbone's too; the fit then runs the backbone at the suggestion x model.backbone_lr_mult. None (the configured
    LR stays) when the test has too few finite losses."""
    from lightning.pytorch.tuner import Tuner

    t = cfg.trainer
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=1,
        precision=t.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=t.deterministic,
        default_root_dir=root,
    )
    configured = net.lr
    finder = Tuner(trainer).lr_find(net, train_dataloaders=train, update_attr=False)
    suggestion = min_loss_lr(finder.results) if finder is not None else None
    net.lr = suggestion or configured
    found = f"{suggestion:.3g}" if suggestion else "nothing (too few finite losses; the configured LR stays)"
    log.info("fold %d: LR finder suggests %s, configured %g", k, found, configured)
    return suggestion


def min_loss_lr(results: dict, skip_begin: int = 10) -> float | None:
    """A tenth of the LR at the range test's lowest (smoothed) loss: fastai's `minimum / 10`. Lightning's own
    `suggestion()`, the steepest slope of the loss against the LR itself rather than its log, is drawn to the test's
    first, tiny LRs, 1e-8 apart, where noise in the loss makes slopes huge: for a MiniLM finetune on rotten it gave
    2.3e-7, at which the fit learned nothing (docs/benchmarks.md)."""
    losses = np.asarray(results["loss"][skip_begin:], float)
    if np.isfinite(losses).sum() < 2:
        return None
    return float(results["lr"][skip_begin + int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))]) / 10


def train_fold(
    cfg,
    comp: Competition,
    backbone: Backbone | None,
    datasets: dict,
    in_dim: int,
    k: int,
    model_dir: Path,
    y_scale: tuple[float, float],
) -> dict:
    """Fit one fold of a torch head with Lightning and return its OOF/test predictions, history and best score."""
    start = time.time()
    net = build_net(cfg, comp, backbone, in_dim)
    net.y_mean, net.y_std = y_scale
    loaders = make_loaders(cfg, datasets)
    ckpt_dir = model_dir / "checkpoints" / f"fold{k}"
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # left by a crashed run of this fold
    mode = "max" if comp.metric.greater_is_better else "min"
    t = cfg.trainer
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    lr_found = find_lr(cfg, net, loaders["train"], k, ckpt_dir) if t.get("lr_find") else None
    # with EMA the checkpoint must be a full one: only then does Lightning let the averaging callback put the
    # averaged weights (the ones validated) into its state_dict
    ckpt = ModelCheckpoint(ckpt_dir, "best", monitor="val_metric", mode=mode, save_weights_only=not t.get("ema"))
    callbacks = [ckpt] + ([EarlyStopping("val_metric", patience=t.patience, mode=mode)] if t.early_stopping else [])
    callbacks += [ema(t.ema_decay)] if t.get("ema") else []  # validates, checkpoints and predicts the EMA weights
    callbacks += build_monitors(cfg.get("monitors"))  # update/parameter ratio, dead ReLUs -> history.csv
    ddp = not isinstance(datasets["train"], ArrayDataset)  # finetunes; heads on features train on one device
    if ddp and n_devices(t) > 1:  # every device validates every row: one score for early stopping and checkpoints
        loaders["val"] = unsharded(loaders["val"])
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices if ddp else 1,
        strategy=fit_strategy(t) if ddp else "auto",
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        callbacks=callbacks,
        logger=TensorBoardLogger(model_dir / "tensorboard", name=f"fold{k}", version=""),
        deterministic=t.deterministic,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    if lr_found is not None:
        trainer.logger.log_metrics({"lr_find": lr_found})  # TensorBoard, beside the LRs of each epoch
    net.train()  # transformers load encoders in eval mode; Net.train keeps only a frozen backbone in eval
    trainer.fit(net, loaders["train"], loaders["val"])
    net.load_state_dict(torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
    val, tick = predict_net(cfg, net, datasets["val"]), time.time()
    test, test_seconds = predict_net(cfg, net, datasets["test"]), time.time() - tick
    best = net.history[int(np.nanargmax([h["val_metric"] * (1 if mode == "max" else -1) for h in net.history]))]
    if t.get("lr_find"):  # history.csv: the finder's suggestion beside the LRs used (advisor: lr_below_finder)
        for h in net.history:
            h["lr_find"] = lr_found if lr_found is not None else float("nan")
    return {
        "val": val,
        "test": test,
        "history": net.history,
        "epochs": len(net.history),
        "best_epoch": best["epoch"],
        "seconds": time.time() - start,
        "test_seconds": test_seconds,  # predicting the test rows (benchmarks/bench_predict.py compares)
        "model": net,
    }
