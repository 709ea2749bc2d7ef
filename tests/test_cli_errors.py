"""The data stage from the command line: its outputs for a good competition, one `error:` line for a bad one.

Each case starts Python (~2 s), so only a few representative bad inputs run here; every bad input is covered
in-process by tests/test_contract.py.
"""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, Comp

from pipeline.prepare import prepare

pytestmark = pytest.mark.slow  # a Python process per case; test_contract.py and test_bad_inputs.py check in-process
OUTPUTS = ("folds.csv", "folds.json", "competition.json")


def run_prepare(comp: Comp, out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out_dir}", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.prepare", "data=csv", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error_line(result: subprocess.CompletedProcess, match: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert match in last


def test_good_competition(make_comp: Callable[..., Comp], out_dir: Path) -> None:
    comp = make_comp(labels=("no", "yes", "maybe"), images=True)
    result = run_prepare(comp, out_dir, "data.image_col=image", f"data.image_dir={comp.images}", "cv.n_folds=3")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out_dir.iterdir()} >= set(OUTPUTS)
    folds = pd.read_csv(out_dir / "folds.csv")
    assert folds["id"].tolist() == comp.train["id"].tolist() and set(folds["fold"]) == {0, 1, 2}
    info = json.loads((out_dir / "competition.json").read_text())
    assert (info["task"], info["classes"], info["metric"]) == (
        "multiclass",
        ["maybe", "no", "yes"],
        "accuracy",
    )
    assert json.loads((out_dir / "folds.json").read_text())["folds_hash"] == info["folds_hash"]


def _missing_train(comp: Comp) -> None:
    comp.train_csv.unlink()


def _duplicated_id(comp: Comp) -> None:
    comp.train.loc[9, "id"] = 8
    comp.write()


def _empty(comp: Comp) -> None:
    comp.train_csv.write_bytes(b"")


@pytest.mark.parametrize(
    ("edit", "overrides", "match"),
    [
        (_missing_train, [], "train_csv file not found: "),
        (_duplicated_id, [], "train.csv line 11: duplicated id"),
        (None, ["cv.scheme=loo"], "unknown cv.scheme 'loo'"),
        (_empty, [], "train.csv is empty"),
    ],
    ids=["missing file", "duplicated id", "unknown scheme", "empty csv"],
)
def test_bad_input(
    make_comp: Callable[..., Comp],
    out_dir: Path,
    edit: Callable[[Comp], None] | None,
    overrides: list[str],
    match: str,
) -> None:
    comp = make_comp()
    if edit:
        edit(comp)
    assert_one_error_line(run_prepare(comp, out_dir, *overrides), match)
    assert not [p.name for p in out_dir.glob("*") if p.name in OUTPUTS]


def test_stale_folds(make_comp: Callable[..., Comp], make_cfg: Callable, out_dir: Path) -> None:
    comp = make_comp()
    prepare(make_cfg(comp))  # folds built in-process: one subprocess for the refusal
    before = (out_dir / "folds.csv").read_bytes()
    result = run_prepare(comp, out_dir, "cv.n_folds=3")
    assert_one_error_line(result, "the CV settings changed (n_folds 5 -> 3). Rebuild it with cv.rebuild=true")
    assert (out_dir / "folds.csv").read_bytes() == before
