"""A training option on the true test labels: each member trained with it against its twin without (the same spec,
seed and folds), and the weighted ensemble of either side. Options: refit-full (`model.refit_full=true`: the twins
share their OOF, so the ensemble fitted on it is applied to either side's test predictions) and pseudo-labels
(`pseudo_labels=<p>`: OOF of its own, so each side's ensemble is fitted on its own OOF).

    .venv/bin/python benchmarks/bench_twins.py ames refit
    .venv/bin/python benchmarks/bench_twins.py adult pseudo --threshold 0.95 --method mean

Reads `outputs/<name>/` (after training the members both ways); writes nothing. One JSON line per twin pair and one
for the ensemble: CV of each side and the option's mean paired per-fold CV gain +- its SE, test score of each side
and the option's test gain (positive: better) +- its standard error over 300 paired bootstrap resamples of the test
rows (bench_anchors.py). Needs the demo's test_labels.csv.
"""

import argparse
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_anchors import paired_bootstrap  # noqa: E402

from pipeline.artifacts import model_folders  # noqa: E402
from pipeline.ensembling.members import load_context, load_stack  # noqa: E402
from pipeline.ensembling.registry import build_methods  # noqa: E402
from pipeline.ensembling.scoring import Entry, evaluate_method, metric_input, paired_gain, score  # noqa: E402
from pipeline.training.job import model_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def twin(cfg: DictConfig, option: str, threshold: float | None) -> DictConfig | None:
    """The config of a member's twin without `option`, or None when the member was trained without it (or, given
    `threshold`, with other pseudo-labels)."""
    with open_dict(cfg):
        if option == "refit" and cfg.model.get("refit_full"):
            cfg.model.refit_full = False
            return cfg
        if option == "pseudo" and cfg.get("pseudo_labels") is not None and threshold in (None, cfg.pseudo_labels):
            cfg.pop("pseudo_labels"), cfg.pop("teacher")
            return cfg
    return None


def twins(out_dir: Path, task: str, option: str, threshold: float | None) -> list[tuple[str, str]]:
    """(member without the option, member with it) for every member with it whose twin was trained."""
    names = {f.name for f in model_folders(out_dir)}
    pairs = [(twin(f.read_config(), option, threshold), f.name) for f in model_folders(out_dir)]
    pairs = [(model_id(cfg, task), name) for cfg, name in pairs if cfg is not None]
    return sorted((a, b) for a, b in pairs if a in names)


def member(stack, i: int, metric) -> Entry:
    s = score(metric, stack.y, stack.oof[i], stack.folds)
    s.test = metric(stack.test_y, metric_input(stack.test[i]))
    return Entry("member", stack.names[i], s, stack.test[i])


def row(name: str, metric, y, a: Entry, b: Entry) -> str:
    """The twins' CV and test scores, the option's CV gain (per fold) and test gain (bootstrap), +- SE."""
    cv_gain, cv_se = paired_gain(b, a, metric)
    gain, se = paired_bootstrap(metric, y, metric_input(b.test_pred), metric_input(a.test_pred))
    out = {"member": name, "cv": a.score.cv_mean, "cv_with": b.score.cv_mean, "cv_gain": cv_gain, "cv_gain_se": cv_se}
    out |= {"test": a.score.test, "test_with": b.score.test, "test_gain": gain, "test_gain_se": se}
    return json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", help="the demo: conf/data/<name>.yaml, outputs/<name>/")
    p.add_argument("option", choices=["refit", "pseudo"])
    p.add_argument("--method", default="weighted", help="the ensemble over either side's members")
    p.add_argument("--threshold", type=float, help="pseudo: only the members trained with pseudo_labels=THRESHOLD")
    args = p.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("ensemble", [f"data={args.name}", f"ensemble.method={args.method}"])
    ctx = load_context(Path(cfg.paths.output_dir), cfg.data)
    pairs = twins(ctx.out_dir, ctx.task, args.option, args.threshold)
    stacks = []
    for side in zip(*pairs, strict=True):  # each stack lists its members in their pairs' order (names sort alike)
        with open_dict(cfg):
            cfg.ensemble.include = list(side)
        stacks.append(load_stack(ctx, cfg.ensemble))
    y = stacks[0].test_y
    if y is None:
        sys.exit(f"{args.name}: no test_labels.csv beside train.csv: no test scores")
    for i, (a, _) in enumerate(pairs):
        print(row(a, ctx.metric, y, *(member(s, i, ctx.metric) for s in stacks)), flush=True)
    plain, taught = (evaluate_method(build_methods(cfg.ensemble, ctx, s)[0], s, ctx.metric) for s in stacks)
    if args.option == "refit":  # the same OOF: the ensemble fitted on it, applied to the refit members' test rows
        taught.test_pred = plain.method.predict(stacks[1].test, stacks[0].X_test)
        taught.score.test = ctx.metric(y, metric_input(taught.test_pred))
    print(row(args.method, ctx.metric, y, plain, taught))


if __name__ == "__main__":
    main()
