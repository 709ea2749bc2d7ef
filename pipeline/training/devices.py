"""Devices: GPU defaults chosen when a GPU is present, and data-parallel finetuning on several devices.

`trainer.precision`, `trainer.num_workers` and `trainer.deterministic` default to `${device:<key>,${.accelerator}}`:
resolved when read, so the saved config (and the model id) holds the value used: on the CPU 32-true, 0 workers,
deterministic (as before); on a GPU bf16-mixed (16-mixed on cards without bf16), one loader process per core of
the job (at most 8), cuDNN's fast kernels. Loaders pin memory on a GPU.

`trainer.devices=2 trainer.strategy=ddp` finetunes each fold on 2 devices with Lightning's DDP: the fold's fit
runs in spawned processes (the pipeline around it, its folds and files stay in this one), each device takes
`trainer.batch_size / devices` rows a step, so the global batch, the learning rate and the model id do not
depend on the number of devices. Every device validates all of the fold's validation rows, so early stopping
and the best checkpoint see the same score on every device.
"""

import logging
import warnings

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)
# every device validates every row and logs the same numbers: nothing to synchronize
warnings.filterwarnings("ignore", ".*sync_dist=True.*")
MAX_WORKERS = 8  # loader processes a GPU job needs to keep up with an image finetune; more only cost memory


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def device_default(key: str, accelerator: str = "auto"):
    """The `trainer.<key>` default for the accelerator this job gets (the `device` config resolver)."""
    gpu = uses_gpu(accelerator)
    if key == "precision":
        if not gpu:
            return "32-true"
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if key == "deterministic":  # cuDNN's deterministic kernels cost a GPU finetune speed; the CPU stays exact
        return not gpu
    if key == "num_workers":  # the job's share of the cores (torch threads: `threads`, or cores / parallel jobs)
        return min(MAX_WORKERS, torch.get_num_threads()) if gpu else 0
    raise KeyError(f"no device default for trainer.{key}")


def n_devices(t) -> int:
    """The number of devices a fold trains on when `trainer.devices` is a count (1 otherwise: auto, a list)."""
    return t.devices if isinstance(t.devices, int) and t.devices > 1 else 1


def per_device_batch(t) -> int:
    """Rows per device and step: the global `trainer.batch_size` shared among the devices."""
    return max(1, t.batch_size // n_devices(t))


class _Launcher(_MultiProcessingLauncher):
    """Lightning's launcher for spawned DDP processes, also bringing rank 0's per-epoch history back."""

    def get_extra_results(self, trainer) -> dict:
        return super().get_extra_results(trainer) | {"history": trainer.lightning_module.history}

    def update_main_process_results(self, trainer, extra: dict) -> None:
        super().update_main_process_results(trainer, extra)
        trainer.lightning_module.history[:] = extra["history"]


class SpawnDDP(DDPStrategy):
    def _configure_launcher(self) -> None:
        self._launcher = _Launcher(self, start_method="spawn")


def fit_strategy(t):
    """Lightning's strategy for a fold's fit: `ddp` on several devices runs in spawned processes."""
    if n_devices(t) == 1 or t.strategy not in ("ddp", "ddp_spawn"):
        return t.strategy
    return SpawnDDP(start_method="spawn")


def unsharded(loader: DataLoader) -> DataLoader:
    """The same loader over all of its rows on every device: Lightning leaves a DistributedSampler in place, and
    this one has a single replica."""
    ds = loader.dataset
    return DataLoader(
        ds,
        batch_size=loader.batch_size,
        sampler=DistributedSampler(ds, num_replicas=1, rank=0, shuffle=False),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers,
    )
