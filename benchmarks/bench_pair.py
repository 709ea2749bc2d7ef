"""Two trained members side by side: their CV (on the rows both predicted out of fold) and test scores, and the gain
of B over A with its standard error over 300 paired bootstrap resamples of those rows (`bench_anchors`): a gain
within about two of them is a tie. For an option measured with and without, on one spec (issue 26: EMA, mixup).

    .venv/bin/python benchmarks/bench_pair.py outputs/mnist/models/<A> outputs/mnist/models/<B> \
        data/mnist/train.csv data/mnist/test_labels.csv
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_anchors import paired_bootstrap  # noqa: E402

from pipeline.metrics import get_metric  # noqa: E402


def scored(folder: Path, name: str, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The member's predictions (`oof.csv` or `test.csv`) for the rows of `labels` that it predicted, and the
    encoded labels; class columns in the member's class order."""
    meta = json.loads((folder / "metrics.json").read_text())
    pred = pd.read_csv(folder / name).set_index(labels.columns[0]).loc[labels.iloc[:, 0]]
    classes = [str(c) for c in meta["classes"]]
    y = labels.iloc[:, -1].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()  # as encoded
    return pred[classes].to_numpy(float), y


def compare(a: Path, b: Path, train: pd.DataFrame, test: pd.DataFrame) -> dict:
    meta = json.loads((a / "metrics.json").read_text())
    metric = get_metric(meta["metric"], meta["task"])
    row = {"metric": metric.name}
    for split, name, labels in (("cv", "oof.csv", train), ("test", "test.csv", test)):
        (pa, y), (pb, _) = scored(a, name, labels), scored(b, name, labels)
        rows = ~(np.isnan(pa).any(1) | np.isnan(pb).any(1))  # a holdout predicts only its validation rows
        gain, se = paired_bootstrap(metric, y[rows], pb[rows], pa[rows])
        row |= {f"{split}_a": metric(y[rows], pa[rows]), f"{split}_b": metric(y[rows], pb[rows])}
        row |= {f"{split}_gain": gain, f"{split}_se": se, f"{split}_rows": int(rows.sum())}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("train_csv", type=Path)
    p.add_argument("test_labels", type=Path)
    args = p.parse_args()
    test = pd.read_csv(args.test_labels)
    train = pd.read_csv(args.train_csv)[[test.columns[0], test.columns[-1]]]  # id and target, named as in test_labels
    print(json.dumps({"a": args.a.name, "b": args.b.name, **compare(args.a, args.b, train, test)}))


if __name__ == "__main__":
    main()
