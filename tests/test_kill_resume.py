"""A zoo killed with SIGKILL at five points and rerun each time ends byte-identical to an uninterrupted run, with no
temporary file left behind (the next run removes those of killed runs)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow
# kill the run as soon as this many files match the pattern under the output folder
KILL_POINTS = [
    ("folds.csv", 1),  # the data stage has just written the folds
    ("models/*/config.yaml", 1),  # the first member has started
    ("models/*/folds/fold*.npz", 2),  # two of its folds are done
    ("models/*/metrics.json", 1),  # the first member is complete
    ("models/*/folds/fold*.npz", 7),  # the second member is halfway
]


def _zoo(comp_csv: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.train",
        "-m",
        "data=csv",
        f"data.train_csv={comp_csv}",
        "data.target=y",
        "model=tabular_hgb",
        "seed=0,1",
        f"paths.output_dir={out}",
    ]


def _run_until(cmd: list[str], out: Path, pattern: str, count: int) -> bool:
    """Start `cmd`; SIGKILL it once `count` files match `pattern` under `out`. True when it was killed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if len(list(out.glob(pattern))) >= count:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    return False


def _results(out: Path) -> dict[str, bytes]:
    """The files the later stages read, byte for byte (metrics.json without its wall-clock seconds)."""
    found = {}
    for p in sorted(out.glob("*.csv")) + sorted(out.glob("*.json")) + sorted(out.glob("models/*/*.csv")):
        found[str(p.relative_to(out))] = p.read_bytes()
    for p in sorted(out.glob("models/*/metrics.json")):
        metrics = json.loads(p.read_text())
        metrics.pop("seconds", None)
        metrics.pop("test_seconds", None)  # wall-clock too
        found[str(p.relative_to(out))] = json.dumps(metrics, sort_keys=True).encode()
    found.pop("zoo.json", None)
    return found


def test_killed_zoo_resumes_to_identical_outputs(make_comp, tmp_path: Path) -> None:
    comp = make_comp(n_train=200, n_test=50)
    baseline, out = tmp_path / "baseline", tmp_path / "killed"
    assert subprocess.run(_zoo(comp.train_csv, baseline), cwd=ROOT, capture_output=True).returncode == 0
    killed = sum(_run_until(_zoo(comp.train_csv, out), out, pattern, n) for pattern, n in KILL_POINTS)
    assert killed >= 5
    stale = out / "models" / ".left.by.a.kill.tmp"  # as atomic_write leaves one when killed mid-write
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half")
    result = subprocess.run(_zoo(comp.train_csv, out), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"
    assert len(list(out.glob("models/*/metrics.json"))) == 2
    assert _results(out) == _results(baseline)
    assert os.path.exists(out / "folds.json")
