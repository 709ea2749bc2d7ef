"""A distilled member (`model=distill`) against the ensemble that taught it: CV (the ensemble's nested, the
student's per fold, both on the true labels) and true test score, with the student's gain (positive: better) +- its
standard error: per fold for CV, over 300 paired bootstrap resamples of the test rows for test (bench_anchors.py).

    .venv/bin/python benchmarks/bench_distill.py adult

Reads `outputs/<name>/` (after `make ensemble` and `python -m pipeline.train data=<name> model=distill`); writes
nothing; prints one JSON line per student. Time `make predict` of either side with /usr/bin/time (docs/training.md
shows how to submit the student alone).
"""

import argparse
import copy
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_anchors import paired_bootstrap  # noqa: E402
from bench_twins import member  # noqa: E402

from pipeline.artifacts import model_folders  # noqa: E402
from pipeline.ensembling.members import load_stack  # noqa: E402
from pipeline.ensembling.scoring import evaluate_method, metric_input, paired_gain  # noqa: E402
from pipeline.training.teacher import Teacher, teacher_digest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", help="the demo: conf/data/<name>.yaml, outputs/<name>/")
    args = p.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("ensemble", [f"data={args.name}"])
    t = Teacher.load(Path(cfg.paths.output_dir), cfg.data)
    method, metric = copy.deepcopy(t.saved["method"]), t.ctx.metric
    if hasattr(method, "metric"):
        method.metric = metric
    teacher = evaluate_method(method, t.stack, metric)  # the nested CV make ensemble reported
    digest = teacher_digest(t.ctx.out_dir)
    students = [f.name for f in model_folders(t.ctx.out_dir) if f.read_config().get("teacher") == digest]
    with open_dict(cfg):
        cfg.ensemble.include = [s for s in students if "distill" in s]
    stack = load_stack(t.ctx, cfg.ensemble)
    y = stack.test_y
    for i, name in enumerate(stack.names):
        s = member(stack, i, metric)
        cv_gain, cv_se = paired_gain(s, teacher, metric)
        gain, se = paired_bootstrap(metric, y, metric_input(s.test_pred), metric_input(teacher.test_pred))
        row = {"student": name, "teacher": t.saved["name"], "cv": teacher.score.cv_mean, "cv_student": s.score.cv_mean}
        row |= {"cv_gain": cv_gain, "cv_gain_se": cv_se, "test": teacher.score.test, "test_student": s.score.test}
        row |= {"test_gain": gain, "test_gain_se": se}
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
