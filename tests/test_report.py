"""Learning-curve diagnosis on synthetic histories, model selection, and the report page rendered in Chromium."""

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from pipeline.advisor.diagnosis import diagnose
from pipeline.reporting.page import SECTIONS, write_report


def history(train: list[float], val: list[float], folds: int = 3, seed: int = 0, **extra: list[float]) -> pd.DataFrame:
    """`folds` noisy copies (1 %) of the given per-epoch losses, plus any extra per-epoch columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(folds):
        for e, (t, v) in enumerate(zip(train, val, strict=True)):
            noise = 1 + 0.01 * rng.normal(size=2)
            cols = {c: vals[e] for c, vals in extra.items()}
            rows.append({"fold": k, "epoch": e, "train_loss": t * noise[0], "val_loss": v * noise[1], **cols})
    frame = pd.DataFrame(rows)
    return frame.assign(val_metric=1 - frame["val_loss"] / 2)


UNDERFIT = history([2.2, 2.0, 1.85, 1.72, 1.6, 1.5], [2.1, 1.95, 1.8, 1.68, 1.57, 1.47])  # still falling ~6 %/epoch
GOOD = history([1.0, 0.7, 0.55, 0.5, 0.48, 0.47, 0.47], [0.9, 0.7, 0.6, 0.56, 0.55, 0.55, 0.55])
OVERFIT = history([1.0, 0.6, 0.3, 0.15, 0.08, 0.04, 0.02], [0.9, 0.7, 0.65, 0.7, 0.8, 0.95, 1.1])


@pytest.mark.parametrize("hist, verdict", [(UNDERFIT, "underfit"), (GOOD, "good"), (OVERFIT, "overfit")])
def test_diagnosis_on_synthetic_histories(hist, verdict):
    d = diagnose(hist)
    assert d.verdict == verdict, d.reason
    assert {"gap", "rise", "trend", "best_epoch", "folds"} <= set(d.numbers) and d.numbers["folds"] == 3


def test_diagnosis_numbers():
    """The overfit curve: val loss bottoms out at epoch 2 (0.65) and ends at 1.1: rise ~69 %."""
    d = diagnose(OVERFIT)
    assert d.numbers["best_epoch"] == 2 and d.numbers["rise"] == pytest.approx(1.1 / 0.65 - 1, rel=0.05)
    assert d.numbers["gap"] == pytest.approx((0.65 - 0.3) / 0.65, rel=0.05)
    assert "above its minimum" in d.reason
    u = diagnose(UNDERFIT)
    assert u.numbers["trend"] == pytest.approx((1.47 / 1.8 - 1) / 3, rel=0.1) and "still falling" in u.reason
    still_learning = history([1.0, 0.5, 0.3, 0.2, 0.14, 0.1], [0.7, 0.42, 0.34, 0.3, 0.27, 0.25])  # gap 0.6
    d = diagnose(still_learning)
    assert d.numbers["gap"] > 0.5 and d.verdict == "underfit", d.reason  # a gap alone is not overfitting
    sklearn_like = pd.DataFrame({"fold": [0, 1], "epoch": [0, 0], "train_loss": np.nan, "val_loss": np.nan})
    assert diagnose(sklearn_like).verdict == "n/a"


# -- a synthetic zoo: 3 head complexities x 2 seeds, plus the ensemble's files -----------------------------
LEVELS = {  # hidden widths -> (CV accuracy, history); the widest scores best but overfits
    "[64]": (0.80, UNDERFIT),
    "[256]": (0.85, GOOD),
    "[512,256]": (0.86, OVERFIT),
}


def write_member(out: Path, cfg, hidden: str, seed: int, score: float, hist: pd.DataFrame) -> str:
    c = copy.deepcopy(cfg)
    c.model.head.hidden = json.loads(hidden)
    c.seed = seed
    mid = f"tf_efficientnet_lite0-full-mlp{hidden.strip('[]').replace(',', 'x')}-s{seed}"
    folder = out / "models" / mid
    folder.mkdir(parents=True)
    OmegaConf.save(c, folder / "config.yaml", resolve=True)
    extra = {"update_ratio_head": 2e-3, "update_ratio_backbone": 3e-5 if hidden == "[64]" else 2e-4}
    extra |= {"dead_relu_head.2": 0.35 if hidden == "[512,256]" else 0.05}
    hist.assign(**extra).to_csv(folder / "history.csv", index=False)
    metrics = {"model_id": mid, "metric": "accuracy", "greater_is_better": True, "cv_score": score + seed / 1000}
    metrics |= {"cv_mean": score, "cv_std": 0.01, "epochs": [len(hist) // 3] * 3, "seconds": 1.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return mid


def write_ensemble(out: Path, names: list[str]) -> None:
    import matplotlib.pyplot as plt

    board = [{"kind": "member", "name": n, "cv_mean": 0.8, "cv_std": 0.01, "chosen": False} for n in names]
    board.append({"kind": "method", "name": "weighted", "cv_mean": 0.88, "cv_std": 0.01, "chosen": True})
    pd.DataFrame(board).to_csv(out / "leaderboard.csv", index=False)
    weights = {"weights": {n: 1 / len(names) for n in names}, "optimizer": "caruana"}
    (out / "weights.json").write_text(
        json.dumps({"method": "weighted", "members": names, "methods": {"weighted": weights}})
    )
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(np.eye(len(names)), cmap="viridis")
    fig.savefig(out / "correlation.png")
    plt.close(fig)


@pytest.fixture
def zoo(make_comp, make_cfg, tmp_path) -> Path:
    cfg = make_cfg(make_comp(images=True), "model.head.dropout=0.2")  # dropout beside batch norm: one finding
    out = tmp_path / "out"
    names = [
        write_member(out, cfg, hidden, seed, score, hist) for hidden, (score, hist) in LEVELS.items() for seed in (0, 1)
    ]
    write_ensemble(out, names)
    return out


@pytest.mark.slow
def test_report_page_sections_and_selection(zoo):
    page = write_report(zoo).read_text()
    for sid in SECTIONS:
        assert f'id="{sid}"' in page
    assert page.count("data:image/png;base64,") == 6 + 1 + 1  # curves, selection figure, heatmap
    assert "Recommendation: tf_efficientnet_lite0 mlp256</b>" in page
    assert "mlp512x256 scores 0.86" in page and "overfit" in page
    assert "dropout_with_batch_norm" in page  # findings recomputed from config.yaml (no advice.json)
    assert "low: raise the LR" in page and "high (&gt; 20%)" in page
    assert len(list((zoo / "report" / "curves").glob("*.png"))) == 6 and (zoo / "report" / "selection0.png").is_file()


# -- rendering in headless Chromium ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser that `make browser` installs (CI runs it first); without one the test skips."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH: `make browser` installs it (apt-get, as root or with sudo)")
    return exe


def headless(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # two browser launches; test_report_page_sections_and_selection checks the page itself
def test_report_renders_in_headless_chromium(zoo, chromium, tmp_path):
    index = write_report(zoo)
    dom = headless(chromium, tmp_path, "--dump-dom", index.as_uri()).stdout
    for sid in (*SECTIONS, "leaderboard-table", "members-table", "weights-table", "update-ratio", "dead-relu"):
        assert f'id="{sid}"' in dom, sid
    assert dom.count('src="data:image/png;base64,') == 8
    shot = tmp_path / "shot.png"
    headless(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,4000", index.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # matplotlib's tab:orange val-loss lines (255, 127, 14): present only if the embedded PNGs were decoded
    orange = (np.abs(pixels - [255, 127, 14]).sum(1) < 40).sum()
    assert orange > 200, f"{orange} orange pixels: the embedded learning curves did not render"
