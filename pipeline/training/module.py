"""The LightningModule: backbone (optional) + tabular features -> head, trained on one fold (its outputs:
`inference.py`)."""

import logging

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.metrics import Metric
from pipeline.training.inference import Outputs
from pipeline.training.optim import build_scheduler, param_groups

log = logging.getLogger(__name__)


class Net(Outputs, L.LightningModule):
    """A model (`inference.Outputs`: backbone, features, head, outputs) with its training: loss, optimizer groups,
    probe phase, per-epoch history of the losses and the metric."""

    def __init__(
        self,
        head: nn.Module,
        loss: nn.Module,
        metric: Metric,
        optimizer,
        scheduler_cfg,
        backbone: nn.Module | None = None,
        backbone_lr_mult: float = 0.1,
        probe_epochs: int = 0,
        l1: float = 0.0,
        y_scale: tuple[float, float] = (0.0, 1.0),
        tta: bool = False,
        layer_decay: float | None = None,
        mixup=None,
        train_sizes: tuple[int, ...] = (),
    ):
        super().__init__()
        self.backbone, self.head, self.loss_fn, self.metric = backbone, head, loss, metric
        self.optimizer_factory, self.scheduler_cfg = optimizer, scheduler_cfg
        # the head's LR, which the LR finder (trainer.lr_find) replaces; no optimizer: a Net that only runs forward
        self.lr = optimizer.keywords["lr"] if optimizer is not None else None
        self.mixup = mixup  # timm's Mixup (mixup / cutmix of images and their one-hot labels) or None
        if mixup is not None:  # mixed images have soft labels (timm imported only then)
            from timm.loss import SoftTargetCrossEntropy

            self.mixup_loss = SoftTargetCrossEntropy()
        self.backbone_lr_mult, self.probe_epochs, self.l1, self.tta = backbone_lr_mult, probe_epochs, l1, tta
        self.train_sizes = tuple(train_sizes)  # progressive resizing: epoch e < len trains at train_sizes[e] px
        self.layer_decay = layer_decay  # per-layer backbone LR (optim.layer_decay_groups); None: one backbone LR
        self.y_mean, self.y_std = y_scale  # regression targets are standardized with the fold's train rows
        self.history: list[dict] = []
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._train_loss: list[torch.Tensor] = []
        self._train_pred: list[tuple[torch.Tensor, torch.Tensor]] = []

    def compute_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if isinstance(self.loss_fn, nn.CrossEntropyLoss):
            return self.loss_fn(logits, y.long())
        if isinstance(self.loss_fn, nn.BCEWithLogitsLoss):
            return self.loss_fn(logits.squeeze(-1), y.float())  # (n,) binary; (n, labels) several labels
        mean, std = (torch.as_tensor(v, dtype=torch.float32, device=y.device) for v in (self.y_mean, self.y_std))
        return self.loss_fn(logits.squeeze(-1), (y.float() - mean) / std)  # per target for several targets

    # -- training ------------------------------------------------------------------------------------
    @property
    def backbone_frozen(self) -> bool:
        return self.backbone is not None and self.current_epoch < self.probe_epochs

    def train(self, mode: bool = True) -> "Net":
        super().train(mode)
        if self.backbone is not None:
            frozen = self.backbone_frozen
            self.backbone.requires_grad_(not frozen)
            if frozen:  # a frozen backbone keeps its batch-norm statistics
                self.backbone.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning restores each module's own mode after validation; the probe phase ends at an epoch boundary
        self.train()

    def on_fit_start(self) -> None:
        # an LR range test (trainer.lr_find) fits the same module first: its steps are not this fit's history
        self.history.clear()
        self._val.clear()
        self._train_loss.clear()
        self._train_pred.clear()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "image" in batch and self.current_epoch < len(self.train_sizes):  # an early epoch at a smaller size
            size = self.train_sizes[self.current_epoch]
            batch = {**batch, "image": F.interpolate(batch["image"], size=size, mode="bilinear", antialias=True)}
        if self.mixup is not None and len(batch["y"]) % 2 == 0:  # timm mixes a batch with its reverse: even sizes
            image, soft = self.mixup(batch["image"], batch["y"].long())
            logits = self({**batch, "image": image})
            loss = self.mixup_loss(logits, soft)
        else:
            logits = self(batch)
            loss = self.compute_loss(logits, batch["y"])
        if self.l1 > 0:  # L1 on the head's weights, for sparsity
            loss = loss + self.l1 * sum(p.abs().sum() for n, p in self.head.named_parameters() if "weight" in n)
        self._train_loss.append(loss.detach())
        with torch.no_grad():  # the training metric, for learning curves (on augmented rows, as trained); kept on
            # the device until the epoch ends: a copy to the CPU every step would make the GPU wait each time
            self._train_pred.append((self.to_output(logits.detach()).float(), batch["y"]))
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        self._val.append((self.to_output(logits), batch["y"]))
        self.log("val_loss", self.compute_loss(logits, batch["y"]), prog_bar=True, batch_size=len(batch["y"]))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._val.clear()
            return
        score = self._epoch_metric(self._val)
        self._val.clear()
        self.log("val_metric", score, prog_bar=True)
        train_loss = torch.stack(self._train_loss).mean().item() if self._train_loss else float("nan")
        train_metric = self._epoch_metric(self._train_pred)
        self._train_loss.clear()
        self._train_pred.clear()
        lrs = {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(self.trainer.optimizers[0].param_groups)}
        self.log_dict(lrs)
        self.history.append(
            {
                "epoch": self.current_epoch,
                "train_loss": train_loss,
                "train_metric": train_metric,
                "val_loss": self.trainer.callback_metrics["val_loss"].item(),
                "val_metric": score,
                **lrs,
            }
        )
        log.info(
            "epoch %d: train_loss %.4f val_loss %.4f val_%s %.5f",
            self.current_epoch,
            train_loss,
            self.history[-1]["val_loss"],
            self.metric.name,
            score,
        )

    def _epoch_metric(self, outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """The competition metric over an epoch's collected (prediction, target) batches."""
        if not outputs:
            return float("nan")
        pred = torch.cat([p for p, _ in outputs]).float().cpu().numpy()
        y = torch.cat([t for _, t in outputs]).cpu().numpy()
        return self.metric(y, pred) if np.isfinite(pred).all() else float("nan")

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.predict_batch(batch)

    def configure_optimizers(self):
        groups = param_groups(self.backbone, self.head, self.lr, self.backbone_lr_mult, self.layer_decay)
        optimizer = self.optimizer_factory(groups)
        steps = self.trainer.estimated_stepping_batches // max(1, self.trainer.max_epochs)
        sched = build_scheduler(self.scheduler_cfg, optimizer, steps, self.trainer.max_epochs)
        return optimizer if sched is None else {"optimizer": optimizer, "lr_scheduler": sched}
