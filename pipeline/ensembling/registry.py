"""Which methods to try: `ensemble.method` (one name, or `auto` = every one the task allows)."""

from omegaconf import DictConfig

from pipeline.ensembling.members import Context, Stack, add_features
from pipeline.ensembling.methods import Geometric, Mean, Method, Rank, Vote
from pipeline.ensembling.scoring import check_select
from pipeline.ensembling.stacking import Stacking, meta_learner
from pipeline.ensembling.weighted import Weighted
from pipeline.errors import UserError

# simplest first: on a tie in CV, `auto` keeps the earlier (simpler) method
METHODS: dict[str, type[Method]] = {m.name: m for m in (Mean, Rank, Geometric, Vote, Weighted, Stacking)}


def _build(name: str, cfg: DictConfig, ctx: Context, stack: Stack) -> Method:
    if name == "weighted":
        w = cfg.weighted
        return Weighted(ctx.metric, w.optimizer, int(w.iterations), int(w.patience))
    if name == "stacking":
        # passthrough: attach the tabular features to the stack, for every fit to slice like the OOF rows
        features = add_features(stack, ctx) if cfg.stacking.passthrough else ([], [])
        return Stacking(meta_learner(cfg.stacking, ctx.task), bool(cfg.stacking.logit), *features)
    if name == "rank":
        return Rank(int(cfg.get("n_jobs", 1)))
    return METHODS[name]()


def build_methods(cfg: DictConfig, ctx: Context, stack: Stack) -> list[Method]:
    """The methods `ensemble.method` asks for that fit the task (rank, geometric and vote: classification)."""
    check_select(cfg.get("select", "gain"))  # before the work, not after it
    fits = [n for n, m in METHODS.items() if ctx.task in m.tasks]
    if cfg.method == "auto":
        names = fits
    elif cfg.method not in METHODS:
        raise UserError(f"unknown ensemble.method '{cfg.method}': choose auto or one of {', '.join(METHODS)}")
    elif cfg.method not in fits:
        raise UserError(
            f"ensemble.method={cfg.method} does not fit a {ctx.task} task: choose auto or one of {', '.join(fits)}"
        )
    else:
        names = [cfg.method]
    return [_build(n, cfg, ctx, stack) for n in names]
