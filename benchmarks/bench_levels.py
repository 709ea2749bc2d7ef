"""Methods compared on a trained competition: nested CV and true test score, each as a gain over the best member.

    .venv/bin/python benchmarks/bench_levels.py adult --methods weighted stacking hillclimb level2
    .venv/bin/python benchmarks/bench_levels.py adult --methods level2 --set data.metric=logloss ensemble.levels=2

Reads `outputs/<name>/` (after `make train`) with the ensemble stage's own functions; writes nothing. One JSON line
per method: CV mean, the mean paired per-fold gain over the best member by CV and its standard error, the test
score and its gain with the standard error over 300 paired bootstrap resamples of the test rows (as
bench_anchors.py), seconds, and for level2 the levels it kept and the guard's gain. Needs the demo's
test_labels.csv.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_anchors import paired_bootstrap  # noqa: E402

from pipeline.ensembling.members import load_context, load_stack  # noqa: E402
from pipeline.ensembling.registry import build_methods  # noqa: E402
from pipeline.ensembling.scoring import best_member, evaluate_members, evaluate_method, metric_input, paired_gain  # noqa: E402
from pipeline.ensembling.submission import apply_command_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", help="the demo: conf/data/<name>.yaml, outputs/<name>/")
    p.add_argument("--methods", nargs="+", default=["weighted", "hillclimb", "stacking", "level2"])
    p.add_argument("--set", nargs="*", default=[], dest="overrides", help="overrides of the ensemble config")
    args = p.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = {
            m: compose("ensemble", [f"data={args.name}", f"ensemble.method={m}", *args.overrides]) for m in args.methods
        }
    cfg = next(iter(cfgs.values()))
    ctx = load_context(Path(cfg.paths.output_dir), cfg.data)
    stack = load_stack(ctx, cfg.ensemble)
    apply_command_line(ctx, cfg.data, stack.test_ids)  # data.metric given here, as `make ensemble` takes it
    if stack.test_y is None:
        sys.exit(f"{args.name}: no test_labels.csv beside train.csv: no test scores")
    ref = best_member(evaluate_members(stack, ctx.metric), ctx.metric)
    print(
        json.dumps(
            {
                "name": args.name,
                "metric": ctx.metric.name,
                "members": len(stack.names),
                "best_member": ref.name,
                "cv": round(ref.score.cv_mean, 5),
                "test": round(ref.score.test, 5),
            }
        ),
        flush=True,
    )
    for method, c in cfgs.items():
        start = time.perf_counter()
        entry = evaluate_method(build_methods(c.ensemble, ctx, stack)[0], stack, ctx.metric, int(c.ensemble.n_jobs))
        gain, se = paired_gain(entry, ref, ctx.metric)
        test_gain, test_se = paired_bootstrap(
            ctx.metric, stack.test_y, metric_input(entry.test_pred), metric_input(ref.test_pred)
        )
        info = entry.method.describe(stack.names)
        row = {
            "method": method,
            "cv": entry.score.cv_mean,
            "cv_gain": gain,
            "cv_gain_se": se,
            "test": entry.score.test,
            "test_gain": test_gain,
            "test_gain_se": test_se,
            "seconds": time.perf_counter() - start,
            **{k: info[k] for k in ("levels", "guard") if k in info},
        }
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
