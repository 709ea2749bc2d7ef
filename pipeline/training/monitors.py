"""Training health monitors (Lightning callbacks): update/parameter ratio and dead-ReLU fraction.

Both write their per-epoch numbers into the model's history row (`Net.history[-1]`, hence `history.csv`) and log
them to TensorBoard. `Net.on_validation_epoch_end` appends that row; `on_train_epoch_end` runs after it, so the
callbacks fill the row there.
"""

import logging
from collections import defaultdict

import lightning as L
import numpy as np
import torch
from torch import nn

from pipeline.advisor.thresholds import Thresholds

log = logging.getLogger(__name__)
RELUS = (nn.ReLU, nn.ReLU6)  # units output exactly 0 when their input is <= 0
EPS = 1e-12


def build_monitors(cfg) -> list[L.Callback]:
    """The callbacks that `monitors` (conf/monitors/default.yaml) switches on; none when it is absent."""
    if cfg is None or not cfg.get("enabled", True):
        return []
    out: list[L.Callback] = []
    limits = Thresholds.of(cfg)
    if cfg.get("update_ratio", True):
        out.append(UpdateRatio(cfg.get("every_n_steps", 10), cfg.get("per_layer", False), limits))
    if cfg.get("dead_relu", True):
        out.append(DeadRelu(cfg.get("dead_relu_backbone", False), limits))
    return out


def add_to_history(trainer: L.Trainer, pl_module: L.LightningModule, values: dict[str, float]) -> None:
    """Log `values` and merge them into this epoch's history row (when the module keeps one)."""
    if not values:
        return
    pl_module.log_dict(values, on_step=False, on_epoch=True)
    history = getattr(pl_module, "history", None)
    if history and history[-1].get("epoch") == trainer.current_epoch:
        history[-1].update(values)


class UpdateRatio(L.Callback):
    """||delta w|| / ||w|| per optimizer param group (and per layer), sampled every `every_n_steps` batches.

    A copy of the trainable parameters is taken right before a sampled optimizer step and compared with the
    parameters after it; the per-epoch median lands in `update_ratio_<group>` (`update_ratio_<layer>`).
    The first batch of every epoch is always sampled, so full-batch optimizers (one step an epoch) are measured.
    """

    def __init__(self, every_n_steps: int = 10, per_layer: bool = False, limits: Thresholds | None = None):
        self.limits = limits or Thresholds.of()
        self.every_n_steps, self.per_layer = max(1, int(every_n_steps)), per_layer
        self._want = False
        self._before: dict[str, list[tuple[nn.Parameter, torch.Tensor]]] | None = None
        self._ratios: dict[str, list[float]] = defaultdict(list)
        self._warned: set[str] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._want = self._want or batch_idx % self.every_n_steps == 0

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._want or self._before is not None:  # L-BFGS calls this once per closure: keep the first
            return
        self._before = self._snapshot(pl_module, optimizer)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._before is None:
            return
        for key, pairs in self._before.items():
            delta = sum(float((p.detach() - old).pow(2).sum()) for p, old in pairs)
            norm = sum(float(old.pow(2).sum()) for _, old in pairs)
            self._ratios[key].append((delta / max(norm, EPS)) ** 0.5)
        self._before, self._want = None, False

    def _snapshot(self, pl_module, optimizer) -> dict[str, list[tuple[nn.Parameter, torch.Tensor]]]:
        """Copies of the parameters this step will change (they have a gradient), keyed by group and layer."""
        names = {id(p): n for n, p in pl_module.named_parameters()}
        out: dict[str, list] = defaultdict(list)
        for i, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                if p.grad is None:
                    continue
                pair = (p, p.detach().clone())
                out[str(group.get("name", i))].append(pair)
                if self.per_layer and id(p) in names:
                    out[names[id(p)].rsplit(".", 1)[0]].append(pair)  # head.0.weight -> layer head.0
        return out

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        medians = {f"update_ratio_{k}": float(np.median(v)) for k, v in self._ratios.items() if v}
        self._ratios.clear()
        if trainer.current_epoch >= self.limits.warmup_epochs:
            self._warn(trainer, medians)
        add_to_history(trainer, pl_module, medians)

    def _warn(self, trainer, medians: dict[str, float]) -> None:
        """One warning per param group (not per layer) and fold; every epoch's numbers are in history.csv."""
        groups = {str(g.get("name", i)) for i, g in enumerate(trainer.optimizers[0].param_groups)}
        for group in sorted(groups - self._warned):
            value = medians.get(f"update_ratio_{group}")
            if value is not None and self.limits.ratio_status(value) != "ok":
                self._warned.add(group)
                log.warning(self.limits.ratio_advice(group, value, trainer.current_epoch))


class DeadRelu(L.Callback):
    """Share of units per ReLU layer that never output > 0 over the whole validation pass (`dead_relu_<layer>`).

    A unit is a feature of a (batch, features) output or a channel of a (batch, channels, ...) one; for
    (batch, tokens, features) outputs it is the feature, the last dimension.
    """

    def __init__(self, include_backbone: bool = False, limits: Thresholds | None = None):
        self.limits = limits or Thresholds.of()
        # a pretrained backbone's activations are sparse by design (a third of EfficientNet's ReLU6 units stay
        # at 0 on MNIST): the rule of thumb is about the new layers, so only the head is watched by default
        self.include_backbone = include_backbone
        self._active: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._dead: dict[str, float] = {}
        self._warned: set[str] = set()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._active.clear()
        for name, module in pl_module.named_modules():
            if isinstance(module, RELUS) and (self.include_backbone or not name.startswith("backbone.")):
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(module, inputs, output: torch.Tensor) -> None:
            with torch.no_grad():
                out = output.detach()
                unit_dim = -1 if out.ndim == 3 else 1
                active = (out > 0).movedim(unit_dim, -1).reshape(-1, out.shape[unit_dim]).any(0)
                seen = self._active.get(name)
                self._active[name] = active if seen is None else seen | active

        return record

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._dead = {f"dead_relu_{k}": 1.0 - float(v.float().mean()) for k, v in self._active.items()}
        for key, value in self._dead.items():
            if value > self.limits.dead_max and key not in self._warned:
                self._warned.add(key)  # once per fold
                units = int(self._active[key.removeprefix("dead_relu_")].numel())
                log.warning(
                    "epoch %d: %.0f %% of the %d units of ReLU layer '%s' never activated over the validation "
                    "pass (more than %.0f %%): lower optimizer.lr, keep Xavier/Kaiming init, or try "
                    "model.head.activation=leaky_relu",
                    trainer.current_epoch,
                    100 * value,
                    units,
                    key.removeprefix("dead_relu_"),
                    100 * self.limits.dead_max,
                )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        add_to_history(trainer, pl_module, self._dead)
        self._dead = {}
