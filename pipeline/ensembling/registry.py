"""Which methods to try: `ensemble.method` (one name, or `auto` = every one the task allows)."""

from omegaconf import DictConfig

from pipeline.choices import MULTI, Task
from pipeline.ensembling.hillclimb import HillClimb
from pipeline.ensembling.levels import Level2
from pipeline.ensembling.members import Context, Stack, add_features
from pipeline.ensembling.methods import Geometric, Mean, Method, Rank, Vote
from pipeline.ensembling.per_target import PerTarget
from pipeline.ensembling.scoring import check_select
from pipeline.ensembling.stacking import Stacking, estimator, meta_learner
from pipeline.ensembling.weighted import Weighted
from pipeline.errors import UserError

# simplest first: on a tie in CV, `auto` keeps the earlier (simpler) method
METHODS: dict[str, type[Method]] = {
    m.name: m for m in (Mean, Rank, Geometric, Vote, Weighted, HillClimb, Stacking, Level2)
}


def _level2(cfg: DictConfig, ctx: Context, stack: Stack) -> Level2:
    """The level-2 members `ensemble.level2.classifiers` (or `.regressors`) name, each a `Stacking` on the
    level-1 members (and the tabular features, with `passthrough`), and the final weighting's settings."""
    group = "regressors" if ctx.task == "regression" else "classifiers"
    specs = cfg.level2.get(group) or {}
    if not specs:
        raise UserError(f"ensemble.level2.{group} is empty: give at least one level-2 member (see conf/ensemble.yaml)")
    features = add_features(stack, ctx) if cfg.level2.passthrough else ([], [])
    members = {
        name: Stacking(estimator(spec, f"ensemble.level2.{group}.{name}", ctx.task), True, *features)
        for name, spec in specs.items()
    }
    w, keep, guard = cfg.weighted, bool(cfg.level2.keep_level1), bool(cfg.level2.guard)
    return Level2(
        members, ctx.metric, int(w.iterations), int(w.patience), keep, guard, int(cfg.seed), int(cfg.inner_folds)
    )


def _build(name: str, cfg: DictConfig, ctx: Context, stack: Stack) -> Method:
    if name == "weighted":
        w = cfg.weighted
        return Weighted(ctx.metric, w.optimizer, int(w.iterations), int(w.patience))
    if name == "hillclimb":
        h = cfg.hillclimb
        return HillClimb(ctx.metric, float(h.step), bool(h.negative), int(h.max_steps))
    if name == "level2":
        return _level2(cfg, ctx, stack)
    method = _one_target(name, cfg, ctx, stack)
    if ctx.task in MULTI and name in PER_TARGET:
        return PerTarget(method, labels=ctx.task == Task.MULTILABEL)
    return method


PER_TARGET = ("rank", "geometric", "stacking")  # several targets: one copy per target (mean, weighted: as they are)


def _one_target(name: str, cfg: DictConfig, ctx: Context, stack: Stack) -> Method:
    if name == "stacking":
        # passthrough: attach the tabular features to the stack, for every fit to slice like the OOF rows
        features = add_features(stack, ctx) if cfg.stacking.passthrough else ([], [])
        task = "binary" if ctx.task == Task.MULTILABEL else ctx.task  # per label: P(0), P(1)
        return Stacking(meta_learner(cfg.stacking, task), bool(cfg.stacking.logit), *features)
    if name == "rank":
        return Rank(int(cfg.get("n_jobs", 1)))
    return METHODS[name]()


# only when named: hillclimb scored below weighted on the demos, in several times its time (docs/benchmarks.md);
# level2 costs minutes, so `auto` tries it only with ensemble.levels=2
NAMED_ONLY = ("hillclimb", "level2")


def _auto(fits: list[str], levels: int) -> list[str]:
    """`auto`'s candidates: every method that fits the task but those NAMED_ONLY (level2 with levels=2)."""
    return [n for n in fits if n not in NAMED_ONLY or (n == "level2" and levels == 2)]


def build_methods(cfg: DictConfig, ctx: Context, stack: Stack) -> list[Method]:
    """The methods `ensemble.method` asks for that fit the task (rank, geometric and vote: classification)."""
    check_select(cfg.get("select", "gain"))  # before the work, not after it
    levels = int(cfg.get("levels", 1))
    if levels not in (1, 2):
        raise UserError(f"ensemble.levels={levels} is not allowed: choose 1 or 2")
    if levels == 2 and cfg.method not in ("auto", "level2"):
        raise UserError(
            f"ensemble.levels=2 adds level2 to auto's candidates and does nothing with ensemble.method={cfg.method}: "
            "drop it, or choose ensemble.method=auto or level2"
        )
    fits = [n for n, m in METHODS.items() if ctx.task in m.tasks]
    if cfg.method == "auto":
        names = _auto(fits, levels)
    elif cfg.method not in METHODS:
        raise UserError(f"unknown ensemble.method '{cfg.method}': choose auto or one of {', '.join(METHODS)}")
    elif cfg.method not in fits:
        raise UserError(
            f"ensemble.method={cfg.method} does not fit a {ctx.task} task: choose auto or one of {', '.join(fits)}"
        )
    else:
        names = [cfg.method]
    return [_build(n, cfg, ctx, stack) for n in names]
