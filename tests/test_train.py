"""The training stage with tiny real models: a timm ResNet and a 2-layer BERT saved as local "pretrained" weights."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_cfg, comp_cfg

from pipeline.errors import UserError
from pipeline.models.backbones import image_backbone
from pipeline.prepare import prepare
from pipeline.training.job import model_id, train_job

CONF = str(Path(__file__).resolve().parents[1] / "conf")
FAST = ["trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.batch_size=16", "cv.n_folds=3"]


def config(comp, tmp_path: Path, *overrides: str):
    """conftest's builder with outputs under `tmp_path/out`, trained FAST."""
    return comp_cfg(comp, *FAST, *overrides, out_dir=tmp_path / "out")


def image_args(assets, *extra: str) -> list[str]:
    return [
        "model=image",
        "model.backbone.name=resnet18",
        f"model.backbone.weights={assets['resnet']}",
        "model.backbone.input_size=32",
        *extra,
    ]


def text_args(assets, *extra: str) -> list[str]:
    return ["model=text", f"model.backbone.name={assets['bert']}", "data.max_length=16", *extra]


def run(cfg) -> tuple[dict, Path]:
    prep = prepare(cfg)
    metrics = train_job(cfg, prep)
    return metrics, prep.out_dir / "models" / metrics["model_id"]


@pytest.mark.slow
def test_full_finetune_uses_reduced_backbone_lr(make_comp, tmp_path, assets):
    cfg = config(make_comp(images=True), tmp_path, *image_args(assets, "model.finetune=full"))
    metrics, folder = run(cfg)
    hist = pd.read_csv(folder / "history.csv")
    assert np.allclose(hist["lr_backbone"], hist["lr_head"] * 0.1)
    assert np.allclose(hist["lr_head"], 1e-3)
    assert hist["train_metric"].notna().all() and hist["val_metric"].notna().all()
    for f in ("oof.csv", "test.csv", "metrics.json", "history.csv", "config.yaml"):
        assert (folder / f).is_file()
    oof, test = pd.read_csv(folder / "oof.csv"), pd.read_csv(folder / "test.csv")
    assert list(oof.columns) == ["id", "no", "yes"] and len(oof) == 40 and len(test) == 10
    assert np.allclose(oof[["no", "yes"]].sum(1), 1, atol=1e-5)
    assert list(test["id"]) == list(range(40, 50))
    assert (folder / "tensorboard").is_dir() and len(metrics["fold_scores"]) == 3


def test_probe_phase_leaves_backbone_untouched(make_comp, tmp_path, assets):
    """probe_then_full: during the probe epochs the backbone's weights and batch-norm statistics stay fixed."""
    from pipeline.training.module import Net

    backbone = image_backbone(config(make_comp(), tmp_path, *image_args(assets)).model.backbone)
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    net = Net(
        torch.nn.Linear(512, 2), torch.nn.CrossEntropyLoss(), None, None, None, backbone=backbone.module, probe_epochs=1
    )
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(3):
        loss = net.compute_loss(net({"image": torch.randn(8, 3, 32, 32)}), torch.randint(0, 2, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = backbone.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in backbone.module.modules())


@pytest.mark.slow
def test_frozen_embeddings_are_cached_and_shared(make_comp, tmp_path, assets, caplog):
    comp = make_comp(images=True)
    caplog.set_level(logging.INFO)
    first, _ = run(config(comp, tmp_path, *image_args(assets, "model.finetune=frozen")))
    cache = list((tmp_path / "out" / "cache").glob("emb-*.npz"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    caplog.clear()
    second, _ = run(
        config(comp, tmp_path, *image_args(assets, "model.finetune=frozen", "seed=1", "model.head.type=linear"))
    )
    assert first["model_id"] != second["model_id"]
    assert "cache hit" in caplog.text and "computing" not in caplog.text
    assert cache[0].stat().st_mtime_ns == stamp and len(list(cache[0].parent.glob("emb-*.npz"))) == 1


def test_no_oof_row_is_predicted_by_a_model_that_saw_it(make_comp, tmp_path):
    """A 1-nearest-neighbour head memorizes its training rows: on random labels, an OOF row predicted by a
    model that trained on it would be right every time; predicted out of fold, it is right about half the time."""
    comp = make_comp(n_train=200)
    comp.train["y"] = np.random.default_rng(1).choice(["no", "yes"], 200)
    comp.train["num2"] = np.random.default_rng(2).normal(size=200)
    comp.test["num2"] = 0.0
    comp.write()
    estimator = "model.head.estimator={_target_: sklearn.neighbors.KNeighborsClassifier, n_neighbors: 1}"
    cfg = config(comp, tmp_path, "model=tabular", "model.head.type=sklearn", estimator, "data.metric=accuracy")
    metrics, folder = run(cfg)
    assert metrics["cv_score"] < 0.65
    oof = pd.read_csv(folder / "oof.csv")
    folds = pd.read_csv(tmp_path / "out" / "folds.csv")
    assert oof["id"].tolist() == folds["id"].tolist() and oof[["no", "yes"]].notna().all().all()


@pytest.mark.slow
def test_same_seed_same_oof_to_the_last_digit(make_comp, tmp_path, assets):
    """Two trainings of one spec (the second retrains over the first): one folder, the same OOF to the last digit."""
    finetune = image_args(assets, "model.finetune=full", "trainer.max_epochs=1", "cv.n_folds=2", "retrain=true")
    cfg = config(make_comp(images=True), tmp_path, *finetune)
    _, a = run(cfg)
    first = (a / "oof.csv").read_text()
    _, b = run(cfg)
    assert a == b and (b / "oof.csv").read_text() == first


@pytest.mark.slow
def test_resume_after_a_crash_repeats_no_finished_fold(make_comp, tmp_path, caplog):
    comp = make_comp(n_train=60)
    cfg = config(comp, tmp_path, "model=tabular")
    _, folder = run(cfg)
    oof = (folder / "oof.csv").read_text()
    # what a job killed during fold 2 leaves: folds 0-1 saved, a half-written temp file, no metrics.json
    (folder / "metrics.json").unlink()
    (folder / "folds" / "fold2.npz").unlink()
    (folder / "folds" / ".fold2.npz.abc.tmp").write_bytes(b"half")
    caplog.set_level(logging.INFO)
    run(cfg)
    assert "fold 0: done earlier" in caplog.text and "fold 1: done earlier" in caplog.text
    assert "fold 2: done earlier" not in caplog.text and "fold 2: roc_auc" in caplog.text
    assert (folder / "oof.csv").read_text() == oof
    caplog.clear()
    run(cfg)  # complete: the whole job is skipped
    assert "skipping" in caplog.text


@pytest.mark.slow
def test_text_frozen_and_full(make_comp, tmp_path, assets):
    comp = make_comp(text=True)
    frozen, _ = run(config(comp, tmp_path, *text_args(assets, "model.finetune=frozen")))
    full, folder = run(config(comp, tmp_path, *text_args(assets, "model.finetune=full", "trainer.max_epochs=1")))
    assert frozen["model_id"].startswith("bert-frozen") or "frozen" in frozen["model_id"]
    hist = pd.read_csv(folder / "history.csv")
    assert np.allclose(hist["lr_backbone"], hist["lr_head"] * 0.1)
    assert len(list((tmp_path / "out" / "cache").glob("tokens-*.pt"))) == 2  # train and test, tokenized once


def test_regression_and_multiclass_tabular(make_comp, tmp_path):
    reg = make_comp(labels=(0.5, 1.7, 2.25, 3.1, 4.8, 5.05, 6.6), name="reg")
    metrics, folder = run(config(reg, tmp_path / "r", "model=tabular"))
    assert metrics["task"] == "regression" and list(pd.read_csv(folder / "oof.csv").columns) == ["id", "prediction"]
    multi = make_comp(labels=(3, 7, 10), name="multi")
    metrics, folder = run(config(multi, tmp_path / "m", "model=tabular", "optimizer=sgd"))
    assert list(pd.read_csv(folder / "oof.csv").columns) == ["id", "3", "7", "10"]


@pytest.mark.parametrize("preset", ["tabular_hgb", "tabular_lgbm"])
def test_tree_presets_serve_every_task(make_comp, tmp_path, preset):
    """One preset names a ...Classifier; regression gets its ...Regressor twin, classification keeps it."""
    small = ("model.head.estimator.max_iter=5" if preset == "tabular_hgb" else "model.head.estimator.n_estimators=5",)
    reg = make_comp(labels=(0.5, 1.7, 2.25, 3.1, 4.8, 5.05, 6.6), name="reg")
    metrics, folder = run(config(reg, tmp_path / "r", f"model={preset}", *small))
    assert metrics["task"] == "regression" and np.isfinite(pd.read_csv(folder / "oof.csv")["prediction"]).all()
    multi = make_comp(labels=(3, 7, 10), name="multi")
    metrics, folder = run(config(multi, tmp_path / "m", f"model={preset}", *small))
    probs = pd.read_csv(folder / "oof.csv")[["3", "7", "10"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1)
    wrong = "model.head.estimator={_target_: sklearn.linear_model.LogisticRegression}"
    with pytest.raises(UserError, match="LogisticRegression does not fit a regression task: pick a regressor"):
        run(config(reg, tmp_path / "w", "model=tabular", "model.head.type=sklearn", wrong))


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop", "adagrad", "lbfgs"])
def test_optimizers(make_comp, tmp_path, optimizer):
    metrics, _ = run(config(make_comp(), tmp_path, "model=tabular", f"optimizer={optimizer}", "trainer.max_epochs=1"))
    assert np.isfinite(metrics["cv_score"])


@pytest.mark.parametrize("scheduler", ["cosine", "step", "plateau", "onecycle"])
def test_schedulers(make_comp, tmp_path, scheduler):
    metrics, _ = run(config(make_comp(), tmp_path, "model=tabular", f"scheduler={scheduler}"))
    assert np.isfinite(metrics["cv_score"])


def test_model_id_is_readable_and_unique(make_comp, tmp_path, assets):
    comp = make_comp()
    a = model_id(config(comp, tmp_path, *image_args(assets, "model.finetune=frozen")))
    b = model_id(config(comp, tmp_path, *image_args(assets, "model.finetune=frozen", "optimizer.lr=5e-4")))
    assert a.startswith("resnet18-frozen-mlp256-s0-") and a != b


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.backbone.name=resnet_does_not_exist", "unknown model.backbone.name 'resnet_does_not_exist'"),
        ("model.backbone.weights=/no/such/weights.pth", "weights path not found: /no/such/weights.pth"),
        ("model.backbone.name=resnet34", r"do not fit.*(tensors|shape)"),
        ("model.backbone.weights=pkg://no_such_package/w.pth", "the package 'no_such_package' is not installed"),
    ],
)
def test_backbone_errors(make_comp, tmp_path, assets, override, match):
    cfg = config(make_comp(), tmp_path, *image_args(assets, override))
    with pytest.raises(UserError, match=match):
        image_backbone(cfg.model.backbone)


def test_checkpoint_mismatch_names_the_tensor_and_shapes(tmp_path, assets):
    state = torch.load(assets["resnet_named"], weights_only=True)
    state["fc.weight"] = torch.zeros(10, 512)
    torch.save(state, tmp_path / "bad.pth")
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "resnet18", "weights": str(tmp_path / "bad.pth")})
    with pytest.raises(UserError, match=r"tensor 'fc.weight' has shape \(1000, 512\).*\(10, 512\)"):
        image_backbone(cfg)


def test_weights_load_by_name_and_by_position(assets, caplog):
    from omegaconf import OmegaConf

    caplog.set_level(logging.INFO)
    ref = torch.load(assets["resnet_named"], weights_only=True)
    for key, how in (("resnet_named", "by name"), ("resnet", "by position")):
        bb = image_backbone(OmegaConf.create({"name": "resnet18", "weights": str(assets[key])}))
        assert torch.equal(bb.module.state_dict()["conv1.weight"], ref["conv1.weight"])
        assert how in caplog.text


def test_scratch_image_mean_comes_from_the_training_rows_only(make_comp, tmp_path):
    """From scratch, images are zero-centered by the fold's training mean: white validation and test images
    would shift it if they leaked in."""
    from PIL import Image

    from pipeline.training.fold_inputs import fold_datasets
    from pipeline.training.job import fold_rows

    comp = make_comp(images=True)
    cfg = config(
        comp,
        tmp_path,
        "model=image",
        "model.backbone.name=resnet18",
        "model.backbone.weights=null",
        "model.backbone.input_size=8",
    )
    prep = prepare(cfg)
    _, rows = fold_rows(prep.folds)[0]
    for name in [*comp.train["image"].iloc[rows["val"]], *comp.test["image"]]:
        Image.new("RGB", (8, 8), (255, 255, 255)).save(comp.images / name)
    ds = fold_datasets(prep.comp, image_backbone(cfg.model.backbone), cfg, rows, prep.comp.y, tmp_path / "c").datasets
    norm = ds["train"].transform.transforms[-1]
    pixels = [
        np.asarray(Image.open(comp.images / n).convert("RGB"), float) / 255
        for n in comp.train["image"].iloc[rows["train"]]
    ]
    expected = np.mean([p.reshape(-1, 3).mean(0) for p in pixels], axis=0)
    assert np.allclose(norm.mean, expected, atol=1e-6) and norm.std == [1.0, 1.0, 1.0]
    assert max(norm.mean) < 0.9  # the white rows were not averaged in


@pytest.mark.slow
def test_train_cli_on_a_competition_given_by_overrides(make_comp, tmp_path):
    import subprocess
    import sys

    comp = make_comp(n_train=60)
    args = [
        sys.executable,
        "-m",
        "pipeline.train",
        "data=csv",
        f"data.train_csv={comp.train_csv}",
        "data.target=y",
        "model=tabular_hgb",  # an sklearn head: the process starts without Lightning
        f"paths.output_dir={tmp_path / 'out'}",
        *FAST,
    ]
    done = subprocess.run(args, capture_output=True, text=True, cwd=Path(CONF).parent, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "members of" in done.stdout and "tabular-histgradientboostingclassifier-s0-" in done.stdout
    assert len(list((tmp_path / "out" / "models").glob("*/metrics.json"))) == 1
    bad = subprocess.run(
        [*args, "model=image", "model.backbone.weights=/nowhere/w.pth"],
        capture_output=True,
        text=True,
        cwd=Path(CONF).parent,
        timeout=300,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: weights path not found: /nowhere/w.pth")


@pytest.mark.slow
def test_tta_averages_flips_for_oof_and_test(make_comp, tmp_path, assets):
    comp = make_comp(images=True)
    plain, _ = run(config(comp, tmp_path, *image_args(assets, "model.finetune=frozen")))
    tta, folder = run(config(comp, tmp_path, *image_args(assets, "model.finetune=frozen", "model.tta=true")))
    assert plain["model_id"] != tta["model_id"]
    assert len(list((tmp_path / "out" / "cache").glob("emb-*.npz"))) == 2  # flipped embeddings: another key
    with np.load(next(p for p in (tmp_path / "out" / "cache").glob("emb-*.npz") if "train_flip" in np.load(p))) as z:
        assert z["train_flip"].shape == z["train"].shape
    assert pd.read_csv(folder / "test.csv")[["no", "yes"]].sum(1).round(5).eq(1).all()


@pytest.mark.parametrize("precision", ["32-true", "64-true", "bf16-true", "bf16-mixed"])
def test_predict_net_runs_in_the_trained_precision(precision):
    """The trainer-free prediction loop applies `trainer.precision` as Lightning does (true: the model and float
    inputs in that type; mixed: autocast), gives the float32 answer within that type's precision, and leaves the
    model in float32 on the CPU."""
    from omegaconf import OmegaConf

    from pipeline.training.inference import Model, predict_net
    from pipeline.training.loaders import ArrayDataset

    torch.manual_seed(0)
    model = Model(
        torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)), torch.nn.CrossEntropyLoss()
    )
    data = ArrayDataset({"tab": np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)})
    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "precision": precision, "predict_batch_size": 16}})
    full = predict_net(OmegaConf.merge(cfg, {"trainer": {"precision": "32-true"}}), model, data)
    pred = predict_net(cfg, model, data)
    assert pred.shape == (50, 3) and pred.dtype == np.float32
    np.testing.assert_allclose(pred, full, atol=0 if precision == "32-true" else 2e-2 if "bf16" in precision else 1e-6)
    assert (precision == "32-true") == np.array_equal(pred, full)  # computed in that type, not in float32
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


def test_texts_are_predicted_by_length_and_returned_in_row_order():
    """Inference batches texts from the shortest to the longest (each batch pads only to its own lengths), and
    both the prediction loop and the embedding pass return the rows in the dataset's own order."""
    from omegaconf import OmegaConf

    from pipeline.data.text import TextDataset
    from pipeline.training.embeddings import embed
    from pipeline.training.inference import Model, predict_net
    from pipeline.training.loaders import length_order

    class Length(torch.nn.Module):  # a "backbone" whose feature is the text's length in tokens
        def forward(self, input_ids, attention_mask):
            return attention_mask.sum(1, keepdim=True).float()

    lengths = np.random.default_rng(0).integers(1, 12, size=30)
    mask = torch.as_tensor(np.arange(12)[None, :] < lengths[:, None]).long()
    ds = TextDataset({"input_ids": mask * 7, "attention_mask": mask}, np.arange(30)[::-1].copy())
    expected = lengths[::-1].astype(np.float32)
    assert np.all(np.diff(expected[length_order(ds)]) >= 0)
    np.testing.assert_array_equal(embed(Length(), ds, batch_size=4)[:, 0], expected)
    model = Model(torch.nn.Identity(), torch.nn.MSELoss(), backbone=Length())
    trainer = {"accelerator": "cpu", "precision": "32-true", "predict_batch_size": 4, "num_workers": 0}
    cfg = OmegaConf.create({"trainer": trainer})
    np.testing.assert_array_equal(predict_net(cfg, model, ds), expected)


@pytest.mark.parametrize(("accelerator", "rows"), [("cpu", 64), ("gpu", 256)])
def test_predict_batch_size_follows_the_device(accelerator, rows):
    """A CPU predicts and embeds faster in batches of 64 (they stay in its caches), a GPU in batches of 256."""
    assert build_cfg(f"trainer.accelerator={accelerator}").trainer.predict_batch_size == rows
