"""The ensemble stage: combine every trained member, score each combination honestly, write the submission.

Usage::

    python -m pipeline.ensemble                       # every complete model, method=auto
    python -m pipeline.ensemble ensemble.method=stacking ensemble.exclude='[bert*]'
"""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.cli import cli
from pipeline.errors import user_errors

log = logging.getLogger(__name__)


@hydra.main(config_path="conf", config_name="ensemble", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Validate the members, score members and methods out of fold, choose what to submit, write the outputs."""
    # the stage's code (numpy, pandas, scikit-learn) loads only when work starts: `--help` answers at once
    from pipeline.choices import Task
    from pipeline.data.folds import check_folds_file
    from pipeline.ensembling.members import load_context, load_stack
    from pipeline.ensembling.methods import Selected
    from pipeline.ensembling.outputs import leaderboard, summary, table, write_ensemble
    from pipeline.ensembling.registry import build_methods
    from pipeline.ensembling.scoring import choose, evaluate_members, evaluate_method
    from pipeline.ensembling.submission import apply_command_line, build_submission
    from pipeline.metrics import choose_thresholds

    with user_errors():
        check_folds_file(Path(cfg.paths.output_dir))  # folds.csv is the file folds.json describes
        ctx = load_context(Path(cfg.paths.output_dir), cfg.data)  # competition.json, folds, training target
        stack = load_stack(ctx, cfg.ensemble)  # every complete model, validated against the folds
        apply_command_line(ctx, cfg.data, stack.test_ids)  # data.metric / data.sample_submission given here
        methods = build_methods(cfg.ensemble, ctx, stack)
        log.info("%d members, methods %s, metric %s", len(stack.names), [m.name for m in methods], ctx.metric.name)
        members = evaluate_members(stack, ctx.metric, cfg.ensemble.n_jobs)
        # honest (nested) CV, then refit on all rows
        scored = [evaluate_method(m, stack, ctx.metric, cfg.ensemble.n_jobs) for m in methods]
        entries = members + scored
        # auto weighs the methods against the best member submitted as is, with that choice itself scored by
        # nested CV (honest); a named method is what was asked for
        auto = cfg.ensemble.method == "auto"
        honest = evaluate_method(Selected(ctx.metric), stack, ctx.metric, cfg.ensemble.n_jobs) if auto else None
        if honest:
            log.info("the best member chosen out of fold: CV %.5f +- %.5f", honest.score.cv_mean, honest.score.cv_std)
        chosen = choose(entries if auto else scored, ctx.metric, cfg.ensemble.select, honest)
        if ctx.task == Task.MULTILABEL:  # the labels a submission of 0/1 holds: thresholds chosen out of fold
            ctx.thresholds = choose_thresholds(stack.y, chosen.oof_pred).tolist()
        submission = build_submission(chosen.test_pred, stack.test_ids, ctx)
        board = leaderboard(entries, chosen, ctx.metric, with_test=stack.test_y is not None)
        path = write_ensemble(ctx, stack, entries, chosen, submission, board)
        print(table(board))
        print(summary(entries, chosen, ctx.metric))
        print(f"submission: {path}")


def run() -> None:
    """`pipeline-ensemble`: the command line checked before Hydra creates its run folder."""
    cli(main, "ensemble")


if __name__ == "__main__":
    run()
