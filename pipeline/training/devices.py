"""Devices: GPU defaults chosen when a GPU is present, and how a global batch is shared among devices (DDP itself:
`pipeline/training/ddp.py`).

`trainer.precision`, `trainer.num_workers`, `trainer.deterministic` and `trainer.predict_batch_size` default to
`${device:<key>,${.accelerator}}`: resolved when read, so the saved config (and the model id) holds the value used:
on the CPU 32-true, 0 workers, deterministic (as before), 64 rows a batch when predicting or embedding; on a GPU
bf16-mixed (16-mixed on cards without bf16), one loader process per core of the job (at most 8), cuDNN's fast
kernels, 256 rows. Loaders pin memory on a GPU.

On 2 CPU cores, 64 rows instead of 256 (same numbers, to float rounding): MiniLM over rotten's 2,551 test texts
11.0 s -> 8.1 s; an EfficientNet-Lite0 over mnist's 1,000 test images at 224 px 10.2-12.6 s -> 8.5 s, and a
finetuned one's 5 fold models at 160 px 3.3-3.7 s -> 2.0 s.
"""

import torch

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
    if key == "predict_batch_size":  # a CPU runs smaller batches faster (they stay in its caches), a GPU larger ones
        return 256 if gpu else 64
    raise KeyError(f"no device default for trainer.{key}")


def n_devices(t) -> int:
    """The number of devices a fold trains on when `trainer.devices` is a count (1 otherwise: auto, a list)."""
    return t.devices if isinstance(t.devices, int) and t.devices > 1 else 1


def per_device_batch(t) -> int:
    """Rows per device and step: the global `trainer.batch_size` shared among the devices."""
    return max(1, t.batch_size // n_devices(t))
