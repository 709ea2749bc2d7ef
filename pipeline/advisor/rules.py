"""The config advisor: the practitioner's rules of thumb (README, "Know-how") checked on a composed `train` config.

One small pure function per rule, each returning a list of `Finding`s (the rule behind it and the fix). Config
rules run before every training job (`pipeline.train`) or alone (`python -m pipeline.advise`); the history rule
runs after a job, on its learning curves. `advisor.strict=true` turns findings into errors; `advisor.ignore`
silences rules by name.
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from pipeline.advisor.diagnosis import diagnose
from pipeline.artifacts import ModelFolder, read_json, write_json
from pipeline.choices import (
    BACKBONE_KINDS,
    TRAINS_BACKBONE,
    Activation,
    HeadInit,
    HeadType,
    Scheduler,
    is_pretrained,
)
from pipeline.errors import UserError

log = logging.getLogger(__name__)
ADAM_FAMILY = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam")
LR_MIN, LR_MAX = 1e-5, 1e-2  # Adam-family head LR (the head always starts from scratch); 1e-3 / 5e-4 are safe
VAL_FRACTION = (0.2, 0.3)  # holdout validation share
MAX_SWEPT = 3  # tune 1-3 hyperparameters at a time
NOT_HYPERPARAMETERS = ("seed",)  # seeds are replicates to average over, not something to tune
FINDER_GAP = 10  # a configured LR this many times below the LR finder's suggestion is flagged
LARGE_WEIGHT_DECAY = {"AdamW": 5e-2, "default": 1e-3}  # decoupled (AdamW) vs L2 added to the gradient


@dataclass(frozen=True)
class Finding:
    """One advisor finding: the rule's name, what was found, the rule of thumb behind it and the fix."""

    rule: str
    found: str
    why: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.found}. Rule: {self.why}. Fix: {self.fix}"


# -- helpers on the config ----------------------------------------------------------------------------------
def optimizer_name(cfg) -> str:
    """The optimizer's class name, e.g. `AdamW` for `torch.optim.AdamW`."""
    return str(cfg.optimizer._target_).rsplit(".", 1)[-1]


def trains_torch(cfg) -> bool:
    """True when a torch head trains with the optimizer (a scikit-learn head has its own fitting)."""
    return cfg.model.head.type != HeadType.SKLEARN


def trains_backbone(cfg) -> bool:
    """True when backbone weights are updated, on per-row mini-batches of images or tokens."""
    return cfg.model.kind in BACKBONE_KINDS and cfg.model.get("finetune") in TRAINS_BACKBONE


def pretrained(cfg) -> bool:
    """True when the backbone starts from pretrained weights (text: unless weights=null)."""
    return bool(cfg.model.get("backbone")) and is_pretrained(cfg.model.kind, cfg.model.backbone)


# -- config rules -------------------------------------------------------------------------------------------
def zero_init(cfg) -> list[Finding]:
    """All-zero or constant initialization of an MLP head: its hidden units stay identical."""
    head, init = cfg.model.head, cfg.model.head.get("init", HeadInit.XAVIER)
    if head.type != HeadType.MLP or init not in (HeadInit.ZEROS, HeadInit.CONSTANT):
        return []
    return [
        Finding(
            "zero_init",
            f"model.head.init={init}: every hidden unit starts identical, gets the same gradient and stays so",
            "never zero (or constant) init; Xavier for new layers",
            "drop the +model.head.init override (xavier is the default)",
        )
    ]


def sigmoid_hidden(cfg) -> list[Finding]:
    """Sigmoid hidden units saturate, are not zero-centred and slow learning."""
    head = cfg.model.head
    if head.type != HeadType.MLP or head.activation != Activation.SIGMOID:
        return []
    return [
        Finding(
            "sigmoid_hidden",
            "model.head.activation=sigmoid in the hidden layers: saturated units pass almost no gradient",
            "ReLU first, sigmoid never in hidden layers",
            "model.head.activation=relu",
        )
    ]


def sgd_plain(cfg) -> list[Finding]:
    """SGD with neither momentum nor a schedule: slow, and stuck at one step size."""
    if not trains_torch(cfg) or optimizer_name(cfg) != "SGD":
        return []
    if cfg.optimizer.get("momentum") or cfg.scheduler.name != Scheduler.NONE:
        return []
    return [
        Finding(
            "sgd_plain",
            "optimizer=sgd with momentum=0 and scheduler=none",
            "plain SGD needs momentum and a decaying LR; Adam (0.9, 0.999) works out of the box",
            "optimizer.momentum=0.9 and scheduler=cosine, or optimizer=adam",
        )
    ]


def lr_range(cfg) -> list[Finding]:
    """An Adam-family learning rate far outside [LR_MIN, LR_MAX]."""
    name, lr = optimizer_name(cfg), float(cfg.optimizer.lr)
    if not trains_torch(cfg) or name not in ADAM_FAMILY or LR_MIN <= lr <= LR_MAX:
        return []
    low = lr < LR_MIN
    found = f"optimizer.lr={lr:g} for {name} is {'below' if low else 'above'} {LR_MIN if low else LR_MAX:g}: " + (
        "the head (trained from scratch) barely moves" if low else "the loss oscillates or diverges"
    )
    why = "too-low LR wastes the most time" if low else "Adam takes lr 1e-3 or 5e-4"
    return [Finding("lr_range", found, why, "optimizer.lr=1e-3 (or 5e-4)")]


def dropout_with_batch_norm(cfg) -> list[Finding]:
    """Dropout beside batch norm: the two interfere (variance shift between training and inference)."""
    head = cfg.model.head
    if head.type != HeadType.MLP or not head.batch_norm or not head.dropout > 0:
        return []
    return [
        Finding(
            "dropout_with_batch_norm",
            f"model.head.dropout={head.dropout} together with model.head.batch_norm=true",
            "don't combine dropout with batch norm",
            "model.head.dropout=0 (or model.head.batch_norm=false)",
        )
    ]


def backbone_lr(cfg) -> list[Finding]:
    """Finetuning pretrained weights at the head's full LR (or above) wipes out what they learned."""
    mult = cfg.model.get("backbone_lr_mult")
    if not trains_backbone(cfg) or not pretrained(cfg) or mult is None or mult < 1:
        return []
    return [
        Finding(
            "backbone_lr",
            f"model.backbone_lr_mult={mult} while finetuning pretrained weights (model.finetune={cfg.model.finetune})",
            "finetune at ~1/10 of the LR",
            "model.backbone_lr_mult=0.1",
        )
    ]


def lbfgs_minibatch(cfg) -> list[Finding]:
    """L-BFGS on mini-batches: its curvature estimate assumes the same (full-batch) loss at every step.

    Heads on arrays (tabular features, frozen embeddings) get the full batch (pipeline/training/loop.py);
    finetuning a backbone streams images/tokens in mini-batches of trainer.batch_size.
    """
    if not trains_torch(cfg) or optimizer_name(cfg) != "LBFGS" or not trains_backbone(cfg):
        return []
    return [
        Finding(
            "lbfgs_minibatch",
            f"optimizer=lbfgs with model.finetune={cfg.model.finetune}: mini-batches of "
            f"{cfg.trainer.batch_size} images/texts",
            "L-BFGS only full-batch",
            "optimizer=adam, or model.finetune=frozen (L-BFGS on the full batch of cached embeddings)",
        )
    ]


def holdout_fraction(cfg) -> list[Finding]:
    """A holdout validation share outside VAL_FRACTION."""
    cv = cfg.get("cv")
    if cv is None or cv.get("scheme") != "holdout" or VAL_FRACTION[0] <= float(cv.val_fraction) <= VAL_FRACTION[1]:
        return []
    return [
        Finding(
            "holdout_fraction",
            f"cv.val_fraction={cv.val_fraction} with cv.scheme=holdout",
            "validate on 20-30 % of the data: less is a noisy score, more starves training",
            "cv.val_fraction=0.2 (or cv.scheme=auto: 5 folds, 20 % each)",
        )
    ]


def sweep_size(swept: list[str]) -> list[Finding]:
    """More than MAX_SWEPT hyperparameters swept at once: the effects cannot be told apart."""
    if len(swept) <= MAX_SWEPT:
        return []
    return [
        Finding(
            "sweep_size",
            f"{len(swept)} hyperparameters swept at once ({', '.join(swept)})",
            f"tune 1-{MAX_SWEPT} hyperparameters at a time",
            "sweep the 1-3 that matter most (LR first), fix the others, then sweep the next ones",
        )
    ]


CONFIG_RULES = (
    zero_init,
    sigmoid_hidden,
    sgd_plain,
    lr_range,
    dropout_with_batch_norm,
    backbone_lr,
    lbfgs_minibatch,
    holdout_fraction,
)


# -- the history rule (after training) ----------------------------------------------------------------------
def regularizers(cfg) -> list[tuple[str, float, float]]:
    """(config key, its value, the value to try instead) for each regularizer switched on."""
    if not trains_torch(cfg):
        return []
    on = []
    head = cfg.model.head
    if head.type == HeadType.MLP and head.dropout > 0:
        on.append(("model.head.dropout", float(head.dropout), 0.0))
    if cfg.model.get("l1", 0) > 0:
        on.append(("model.l1", float(cfg.model.l1), 0.0))
    name, wd = optimizer_name(cfg), float(cfg.optimizer.get("weight_decay", 0) or 0)
    limit = LARGE_WEIGHT_DECAY.get(name, LARGE_WEIGHT_DECAY["default"])
    if wd > limit:
        on.append(("optimizer.weight_decay", wd, limit / 10))
    return on


def needless_regularization(cfg, history: pd.DataFrame) -> list[Finding]:
    """Regularization on while the learning curves show no overfitting."""
    on = regularizers(cfg)
    d = diagnose(history)
    if not on or d.verdict in ("overfit", "n/a"):
        return []
    now = ", ".join(f"{k}={v:g}" for k, v, _ in on)
    fix = " ".join(f"{k}={off:g}" for k, _, off in on)
    return [
        Finding(
            "needless_regularization",
            f"{now} while the learning curves show no overfitting ({d.verdict}: {d.reason})",
            "add regularization only once overfitting shows",
            f"retrain with {fix} and keep whichever scores better in CV",
        )
    ]


def lr_below_finder(cfg, history: pd.DataFrame) -> list[Finding]:
    """optimizer.lr far below the LR range test's suggestion (trainer.lr_find, its `lr_find` column in history.csv).

    The fit used the suggestion; the finding says what to configure where the finder does not run (other seeds and
    presets, a refit), since a too-low LR wastes the most time."""
    if "lr_find" not in history:
        return []
    found = history.groupby("fold")["lr_find"].first().dropna()  # one suggestion per fold, on each epoch's row
    lr = float(cfg.optimizer.lr)
    if found.empty or lr * FINDER_GAP >= found.median():
        return []
    suggested = float(found.median())
    return [
        Finding(
            "lr_below_finder",
            f"optimizer.lr={lr:g} is {suggested / lr:.0f}x below the LR finder's suggestion {suggested:.2g} "
            f"(the median over {len(found)} folds)",
            "too-low LR wastes the most time; the range test's steepest descent is a good start",
            f"optimizer.lr={suggested:.2g} (or keep trainer.lr_find=true)",
        )
    ]


# -- running the rules --------------------------------------------------------------------------------------
def _kept(cfg, findings: list[Finding]) -> list[Finding]:
    ignore = set((cfg.get("advisor") or {}).get("ignore") or [])
    return [f for f in findings if f.rule not in ignore]


def check(cfg, swept: list[str] | tuple = ()) -> list[Finding]:
    """Every config rule on a composed `train` config, plus the sweep rule on the swept keys."""
    findings = [f for rule in CONFIG_RULES for f in rule(cfg)] + sweep_size(list(swept))
    return _kept(cfg, findings)


def check_history(cfg, history: pd.DataFrame) -> list[Finding]:
    """The rules that need the trained model's learning curves."""
    return _kept(cfg, needless_regularization(cfg, history) + lr_below_finder(cfg, history))


def swept_keys(overrides: list[str], params: dict | None = None) -> list[str]:
    """Hyperparameter keys swept by command-line overrides (`a=1,2`) and `hydra.sweeper.params`, minus seeds."""
    items = [*overrides, *(f"{k}={v}" for k, v in (params or {}).items())]
    keys = set()
    for item in items:
        try:
            (override,) = OverridesParser.create().parse_overrides([item])
        except Exception:  # not an override Hydra would accept: nothing swept there
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return sorted(keys - set(NOT_HYPERPARAMETERS))


def hydra_sweep() -> list[str]:
    """The keys the running Hydra job's sweep varies ([] outside a Hydra app).

    Inside a multirun job `hydra.overrides.task` holds that job's single values; the sweep as typed is in the
    sweep folder's multirun.yaml, which Hydra writes before launching the jobs.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    saved = Path(hc.sweep.dir) / "multirun.yaml"
    if hc.mode == RunMode.MULTIRUN and saved.is_file():
        overrides = list(OmegaConf.load(saved).hydra.overrides.task)
    params = hc.sweeper.get("params")
    return swept_keys(overrides, OmegaConf.to_container(params) if params else None)


def strict_error(cfg, findings: list[Finding], when: str) -> None:
    """Under advisor.strict, stop with one line naming the findings' rules."""
    if findings and (cfg.get("advisor") or {}).get("strict"):
        rules = ", ".join(f.rule for f in findings)
        raise UserError(
            f"advisor.strict=true: {len(findings)} finding(s) {when} ({rules}); apply the fixes shown above, "
            "or silence one with advisor.ignore=[<rule>]"
        )


def enforce(cfg, findings: list[Finding], when: str) -> None:
    """Log each finding as a warning; under advisor.strict, stop."""
    for f in findings:
        log.warning("advisor: %s", f)
    strict_error(cfg, findings, when)


def advise_before(cfg) -> list[Finding]:
    """The config rules before a training job (warnings; errors under advisor.strict)."""
    findings = check(cfg, hydra_sweep())
    enforce(cfg, findings, "in the config")
    return findings


def advise_after(cfg, folder: ModelFolder, before: list[Finding]) -> list[Finding]:
    """The history rule after a job; writes `advice.json` (before + after findings) into the model folder."""
    history = folder.read_history()
    after = check_history(cfg, history) if not history.empty else []
    write_json({"before": [asdict(f) for f in before], "after": [asdict(f) for f in after]}, folder.advice)
    enforce(cfg, after, "in the learning curves")
    return after


def read_advice(folder: ModelFolder) -> dict[str, list[dict]]:
    """A model folder's findings: its advice.json, or recomputed from config.yaml and history.csv."""
    if folder.advice.is_file():
        return read_json(folder.advice)
    cfg, history = folder.read_config(), folder.read_history()
    after = check_history(cfg, history) if not history.empty else []
    return {"before": [asdict(f) for f in check(cfg)], "after": [asdict(f) for f in after]}
