"""Data-parallel finetuning on several devices.

`trainer.devices=2 trainer.strategy=ddp` finetunes each fold on 2 devices with Lightning's DDP: the fold's fit
runs in spawned processes (the pipeline around it, its folds and files stay in this one), each device takes
`trainer.batch_size / devices` rows a step, so the global batch, the learning rate and the model id do not
depend on the number of devices. Every device validates all of the fold's validation rows, so early stopping
and the best checkpoint see the same score on every device.
"""

import warnings

from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch.utils.data import DataLoader, DistributedSampler

from pipeline.training.devices import n_devices

# every device validates every row and logs the same numbers: nothing to synchronize
warnings.filterwarnings("ignore", ".*sync_dist=True.*")


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
