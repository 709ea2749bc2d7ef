"""What a trained torch model computes, without a trainer: its outputs (`Outputs`, shared by the Lightning `Net`
that trains it and the plain `Model` that `make predict` loads) and the predictions of every row of a dataset on
the job's device, in the precision it trained in (`predict_net`, used by both). Lightning stays the training
loop; predicting needs no Lightning, which takes seconds to import."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipeline.choices import MULTI, is_frozen
from pipeline.data.contract import Competition
from pipeline.models.backbones import Backbone
from pipeline.models.heads import build_head
from pipeline.training.devices import uses_gpu
from pipeline.training.loaders import ArrayDataset, array_loader, in_row_order, length_order, loader
from pipeline.training.optim import build_loss


class Outputs:
    """Features from a backbone (images / tokens), precomputed embeddings and tabular columns, then a head; the
    head's logits as class probabilities (n, K) or regression values (n,) in the target's units.

    Batches are dicts with any of: image, input_ids + attention_mask, emb (+ emb_flip for TTA), tab, y.
    The class that mixes this in sets backbone, head, loss_fn, tta, y_mean, y_std.
    """

    def features(self, batch: dict, flip: bool = False) -> torch.Tensor:
        parts = []
        if "image" in batch:
            image = batch["image"].flip(-1) if flip else batch["image"]
            parts.append(self.backbone(image.contiguous(memory_format=torch.channels_last)))
        if "input_ids" in batch:
            parts.append(self.backbone(batch["input_ids"], batch["attention_mask"]))
        if "emb" in batch:
            parts.append(batch["emb_flip"] if flip else batch["emb"])
        if "tab" in batch:
            parts.append(batch["tab"])
        return torch.cat(parts, dim=1)

    def forward(self, batch: dict, flip: bool = False) -> torch.Tensor:
        return self.head(self.features(batch, flip))

    def to_output(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> class probabilities (n, K) or regression values (n,); several targets: P(label) or values
        (n, targets)."""
        if isinstance(self.loss_fn, nn.CrossEntropyLoss):
            return logits.softmax(-1)
        if isinstance(self.loss_fn, nn.BCEWithLogitsLoss) and logits.shape[-1] > 1:  # one sigmoid per label
            return logits.sigmoid()
        if isinstance(self.loss_fn, nn.BCEWithLogitsLoss):
            p = logits.squeeze(-1).sigmoid()
            return torch.stack([1 - p, p], dim=1)
        mean, std = (torch.as_tensor(v, dtype=logits.dtype, device=logits.device) for v in (self.y_mean, self.y_std))
        return logits.squeeze(-1) * std + mean

    def predict_batch(self, batch: dict) -> torch.Tensor:
        out = self.to_output(self(batch))
        if self.tta and ("image" in batch or "emb_flip" in batch):  # horizontal-flip averaging
            out = (out + self.to_output(self(batch, flip=True))) / 2
        return out


class Model(Outputs, nn.Module):
    """A trained member's fold model for prediction: the same parameter names as the `Net` that trained it."""

    def __init__(self, head: nn.Module, loss: nn.Module, backbone: nn.Module | None = None, tta: bool = False):
        super().__init__()
        self.backbone, self.head, self.loss_fn, self.tta = backbone, head, loss, tta
        self.y_mean, self.y_std = 0.0, 1.0


def n_outputs(comp: Competition, loss: nn.Module) -> int:
    """One output per class (cross-entropy) or per target (several targets), else one."""
    return len(comp.classes) if isinstance(loss, nn.CrossEntropyLoss) or comp.task in MULTI else 1


def head_and_loss(cfg, comp: Competition, in_dim: int) -> tuple[nn.Module, nn.Module]:
    """A new head for `in_dim` features (Xavier init, model.head) and the loss it trains with (model.loss)."""
    m = cfg.model
    loss = build_loss(m.loss, comp.task, m.label_smoothing)
    return build_head(m.head, in_dim, n_outputs(comp, loss)), loss


def trainable(cfg, backbone: Backbone | None) -> nn.Module | None:
    """The backbone module that is part of the model (finetuned); a frozen one only computes its inputs."""
    return backbone.module if backbone is not None and not is_frozen(cfg.model) else None


def build_model(cfg, comp: Competition, backbone: Backbone | None, in_dim: int) -> Model:
    return Model(*head_and_loss(cfg, comp, in_dim), backbone=trainable(cfg, backbone), tta=cfg.model.tta)


def predict_loader(cfg, ds: Dataset, order: np.ndarray | None = None) -> DataLoader:
    """Every row of `ds` once, in row order (or `order`), in batches of `trainer.predict_batch_size`."""
    t = cfg.trainer
    if isinstance(ds, ArrayDataset):
        return array_loader(ds.arrays, t.predict_batch_size, False)
    return loader(ds, t.predict_batch_size, False, t.num_workers, order)


AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}  # Lightning's mixed precisions
CAST = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}  # and its true ones


def device_of(accelerator: str) -> torch.device:
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cuda" if uses_gpu(accelerator) else "cpu")


def predict_net(cfg, net: nn.Module, ds: Dataset) -> np.ndarray:
    """A torch model's predictions of every row of a dataset (`predict_nets` with one model)."""
    return predict_nets(cfg, [net], ds)[0]


@torch.inference_mode()
def predict_nets(cfg, nets: list[nn.Module], ds: Dataset) -> list[np.ndarray]:
    """Each torch model's predictions of every row of a dataset, in row order, in the metric's units, in one pass
    over the rows (every model on each batch: a member's fold models read and transform each image once, not once
    a fold). In eval mode, on `trainer.accelerator`, in `trainer.precision` as Lightning applies it (mixed:
    autocast; true: the models and the float inputs in that type); texts batched by length. The models are left on
    the CPU in float32."""
    t = cfg.trainer
    order = length_order(ds)
    data = predict_loader(cfg, ds, order)
    device, precision = device_of(t.accelerator), str(t.precision)
    cast = CAST.get(precision)
    for net in nets:
        net.eval().to(device, dtype=cast)
    out = [[] for _ in nets]
    for batch in data:
        batch = {k: _to(v, device, cast) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=AUTOCAST.get(precision), enabled=precision in AUTOCAST):
            for o, net in zip(out, nets, strict=True):
                o.append(net.predict_batch(batch).float().cpu())
    for net in nets:
        net.to("cpu", dtype=torch.float32)
    return [in_row_order(torch.cat(o).numpy(), order) for o in out]


def _to(value, device: torch.device, cast: torch.dtype | None):
    if not torch.is_tensor(value):
        return value
    value = value.to(device, non_blocking=True)
    return value.to(cast) if cast is not None and value.is_floating_point() else value
