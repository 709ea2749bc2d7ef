"""One validation step of the whole composed config, before anything is written.

Why one function over a table of rules rather than dataclass structured configs: the groups differ per preset
(tabular has no backbone, tfidf a vectorizer, sklearn heads a free-form `estimator`), so a dataclass schema
would repeat every preset's keys a second time, could not state ranges (`lr > 0`), and OmegaConf's own errors are
several lines without a fix. Hydra's struct mode already refuses unknown keys; this module turns that refusal
into one line with the closest valid name, and checks every value against `pipeline/choices.py`.

`check_command_line` runs both checks on the command line before Hydra creates its run folder (`pipeline/cli.py`
calls it for every entry point); `validate(cfg)` is the value check alone (the entry points call it again per
job, for the values of a sweep).
"""

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import CONF_DIR
from pipeline.choices import (
    BACKBONE_KINDS,
    Accelerator,
    Activation,
    CVScheme,
    Encoding,
    EnsembleMethod,
    Finetune,
    HeadInit,
    HeadType,
    HighCardinality,
    Loss,
    ModelKind,
    Pooling,
    Precision,
    Scaling,
    Scheduler,
    Select,
    TargetTransform,
    Task,
    WeightOptimizer,
    ZooTransform,
)
from pipeline.errors import UserError

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")  # one folder under outputs/: no '/', no leading '.'
Check = Callable[[Any], str | None]  # the value -> None when fine, else what was expected


def _close(word: str, choices: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return match[0] if match else None


def one_of(choices: Iterable, nullable: bool = False) -> Check:
    allowed = [str(c) for c in choices]

    def check(v: Any) -> str | None:
        if (v is None and nullable) or (isinstance(v, str) and v in allowed):
            return None
        close = _close(v, allowed) if isinstance(v, str) else None
        hint = f"; did you mean {close}?" if close else ""
        return f"one of {', '.join(allowed)}{' or null' if nullable else ''}{hint}"

    return check


def integer(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        ok = isinstance(v, int) and not isinstance(v, bool)
        if ok and (lo is None or v >= lo) and (hi is None or v <= hi):
            return None
        bounds = " and ".join(
            b for b in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if b
        )
        return f"an integer{' ' + bounds if bounds else ''}{' or null' if nullable else ''}"

    return check


def number(
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    nullable: bool = False,
) -> Check:
    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        ok = isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
        if (
            ok
            and (gt is None or v > gt)
            and (ge is None or v >= ge)
            and (lt is None or v < lt)
            and (le is None or v <= le)
        ):
            return None
        bounds = [
            f"> {gt}" if gt is not None else "",
            f">= {ge}" if ge is not None else "",
            f"< {lt}" if lt is not None else "",
            f"<= {le}" if le is not None else "",
        ]
        return f"a finite number {' and '.join(b for b in bounds if b)}{' or null' if nullable else ''}".rstrip()

    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(nullable: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if (v is None and nullable) or (isinstance(v, str) and v.strip()):
            return None
        return f"a non-empty string{' or null' if nullable else ''}"

    return check


def columns(v: Any) -> str | None:
    """`data.target`: a column, or a list of columns (several targets)."""
    if (isinstance(v, str) and v.strip()) or (isinstance(v, list) and v and all(text()(c) is None for c in v)):
        return None
    return "a non-empty string (a column) or a list of columns, e.g. [a,b]"


def separator(v: Any) -> str | None:
    """`data.label_sep`: null or any non-empty string (a space included)."""
    return None if v is None or (isinstance(v, str) and v) else "a non-empty string such as ' ' or '|', or null"


def names(v: Any) -> str | None:
    """A column name or list of names (`feature_cols`, `ensemble.include`...)."""
    if v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str | int) for s in v)):
        return None
    return "a name or a list of names, e.g. [a,b]"


def subset_of(allowed) -> Check:
    """A list of some of `allowed` (possibly none), e.g. `trainer.onnx=[text,image]`."""
    allowed = [str(a) for a in allowed]

    def check(v: Any) -> str | None:
        if isinstance(v, list) and all(isinstance(a, str) and a in allowed for a in v):
            return None
        return f"a list of some of {', '.join(allowed)}, e.g. [{','.join(allowed)}] or []"

    return check


def integers(lo: int, expected: str, empty: bool = False) -> Check:
    """A list of integers >= lo (`empty`: possibly none); `expected` says what, in the error."""

    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and (empty or v) and all(type(w) is int and w >= lo for w in v)
        return None if ok else expected

    return check


widths = integers(1, "a non-empty list of layer widths >= 1, e.g. [256] or [512,256]")
sizes = integers(8, "a list of image sizes >= 8 px, one per early epoch, e.g. [48,64] or []", empty=True)


def fraction(v: Any) -> str | None:
    return number(ge=0, lt=1)(v)


# key -> check, for every key of the composed train / ensemble configs whose value has a fixed form. Keys a config
# does not hold are skipped (each model preset holds its own subset).
COMMON = {
    "data.train_csv": text(),
    "data.target": columns,
    "data.label_sep": separator,
    "name": text(),
    "paths.data_dir": text(),
    "paths.output_dir": text(),
    "data.test_csv": text(),
    "data.sample_submission": text(nullable=True),
    "data.id_col": text(),
    "data.task": one_of(Task),
    "data.feature_cols": names,
    "data.image_col": text(nullable=True),
    "data.image_dir": text(nullable=True),
    "data.allow_outside_image_dir": boolean,
    "data.hflip": boolean,
    "data.text_col": names,
    "data.max_length": integer(lo=1),
    "data.group_col": text(nullable=True),
    "data.time_col": text(nullable=True),
    "data.categorical_encoding": one_of(Encoding),
    "data.numeric_scaling": one_of(Scaling),
    "data.rare_min_frequency": integer(lo=1),
    "data.datetime_cols": names,
    "data.high_card_encoding": one_of(HighCardinality),
    "data.high_card_min_levels": integer(lo=2),
    "data.text_stats": boolean,
}
TRAIN = {
    "seed": integer(lo=0),
    "retrain": boolean,
    "threads": integer(lo=1, nullable=True),
    "zoo.auto": boolean,
    "zoo.budget_minutes": number(gt=0),
    "zoo.target_transform": one_of(ZooTransform),
    "zoo.skip": names,
    "zoo.search_trials": integer(lo=0),
    "cv.scheme": one_of(CVScheme),
    "cv.n_folds": integer(lo=2),
    "cv.val_fraction": number(gt=0, lt=1),
    "cv.seed": integer(lo=0),
    "cv.rebuild": boolean,
    "model.kind": one_of(ModelKind),
    "model.backbone.name": text(),
    "model.backbone.input_size": integer(lo=8),
    "model.backbone.channels_last": boolean,
    "model.backbone.pooling": one_of(Pooling),
    "model.backbone.num_hidden_layers": integer(lo=1, nullable=True),
    "model.backbone_lr_mult": number(gt=0),
    "model.probe_epochs": integer(lo=0),
    "model.train_sizes": sizes,
    "model.layer_decay": number(gt=0, nullable=True),
    "model.sparse_input": boolean,
    "model.head.type": one_of(HeadType),
    "model.head.activation": one_of(Activation),
    "model.head.init": one_of(HeadInit),
    "model.head.batch_norm": boolean,
    "model.head.dropout": fraction,
    "model.loss": one_of(Loss),
    "model.label_smoothing": fraction,
    "model.l1": number(ge=0),
    "model.tta": boolean,
    "model.mixup": number(ge=0),
    "model.cutmix": number(ge=0),
    "model.augment.hflip": boolean,
    "model.augment.random_resized_crop": boolean,
    "model.categorical_encoding": one_of(Encoding, nullable=True),
    "model.numeric_scaling": one_of(Scaling, nullable=True),
    "model.target_transform": one_of(TargetTransform),
    "optimizer._target_": text(),
    "optimizer.lr": number(gt=0),
    "optimizer.weight_decay": number(ge=0),
    "optimizer.momentum": number(ge=0),
    "scheduler.name": one_of(Scheduler),
    "scheduler.warmup_epochs": number(ge=0),
    "scheduler.step_epochs": integer(lo=1),
    "scheduler.gamma": number(gt=0, nullable=False),
    "scheduler.patience": integer(lo=0),
    "trainer.max_epochs": integer(lo=1),
    "trainer.early_stopping": boolean,
    "trainer.patience": integer(lo=0),
    "trainer.batch_size": integer(lo=1),
    "trainer.predict_batch_size": integer(lo=1),
    "trainer.onnx": subset_of(BACKBONE_KINDS),
    "trainer.accumulate_grad_batches": integer(lo=1),
    "trainer.gradient_clip_val": number(gt=0, nullable=True),
    "trainer.ema": boolean,
    "trainer.ema_decay": fraction,
    "trainer.lr_find": boolean,
    "trainer.precision": one_of(Precision),
    "trainer.accelerator": one_of(Accelerator),
    "trainer.deterministic": boolean,
    "trainer.num_workers": integer(lo=0),
    "trainer.progress_bar": boolean,
    "advisor.strict": boolean,
    "monitors.enabled": boolean,
    "monitors.every_n_steps": integer(lo=1),
}
ENSEMBLE = {
    "ensemble.method": one_of(EnsembleMethod),
    "ensemble.select": one_of(Select),
    "ensemble.include": names,
    "ensemble.exclude": names,
    "ensemble.skip_invalid": boolean,
    "ensemble.search_best_k": integer(lo=1, nullable=True),
    "ensemble.inner_folds": integer(lo=2),
    "ensemble.seed": integer(lo=0),
    "ensemble.n_jobs": integer(lo=-1),
    "ensemble.weighted.optimizer": one_of(WeightOptimizer),
    "ensemble.weighted.iterations": integer(lo=1),
    "ensemble.weighted.patience": integer(lo=1),
    "ensemble.stacking.passthrough": boolean,
    "ensemble.stacking.logit": boolean,
    "ensemble.hillclimb.step": number(gt=0, le=0.5),
    "ensemble.hillclimb.negative": boolean,
    "ensemble.hillclimb.max_steps": integer(lo=1),
    "ensemble.levels": integer(lo=1, hi=2),
    "ensemble.level2.passthrough": boolean,
    "ensemble.level2.keep_level1": boolean,
    "ensemble.level2.guard": boolean,
}
EXAMPLES = {"seed": "0", "name": "my_competition", "data.train_csv": "data/comp/train.csv", "data.target": "label"}


def _get(cfg: DictConfig, key: str, prefix: str = "") -> tuple[bool, Any]:
    """(present, plain value) of a dotted key; a missing mandatory value or a broken interpolation is an error."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig) or leaf not in node.keys():  # `in node` is False for a missing value
        return False, None
    full = prefix + key
    if str(node._get_node(leaf)._value()).startswith("${device:"):  # our resolver's default: valid by construction,
        return False, None  # and reading it would import torch (2 s) before a bad command line is refused
    if OmegaConf.is_missing(node, leaf):
        raise UserError(f"{full} is required: add {full}={EXAMPLES.get(full, '<value>')} to the command line")
    try:
        value = node[leaf]
    except OmegaConfBaseException as e:
        raise UserError(f"{full} cannot be resolved: {str(e).splitlines()[0]}") from e
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    return True, value


def _check_rules(cfg: DictConfig, rules: dict[str, Check], prefix: str = "") -> None:
    for key, check in rules.items():
        present, value = _get(cfg, key, prefix)
        expected = check(value) if present else None
        if expected and expected.startswith("one of"):
            raise UserError(f"unknown {prefix}{key} {_show(value)}: choose {expected}")
        if expected:
            raise UserError(f"{prefix}{key}={_show(value)} is not allowed: expected {expected}")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else "null" if value is None else str(value).replace(" ", "")


def check_name(name: str) -> None:
    """`name` is one folder under outputs/: no path separators, no '..', nothing hidden."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise UserError(
            f"name={_show(name)} is not a folder name (outputs go to outputs/<name>/): use letters, digits, "
            "'_', '-' or '.', e.g. name=my_competition (with data=csv it defaults to the folder holding train.csv)"
        )


def _check_model(m: DictConfig) -> None:
    """What depends on the model kind: a finetune mode only with a backbone, an estimator for sklearn heads."""
    if m.kind in BACKBONE_KINDS:
        _check_rules(m, {"finetune": one_of(Finetune)}, "model.")
    elif m.get("finetune") is not None:
        raise UserError(
            f"model.finetune={_show(m.finetune)} applies to image and text models only; model.kind={m.kind} "
            "has no backbone: drop the override"
        )
    head = m.get("head")
    if head is None:
        return
    if head.get("type") == HeadType.MLP:
        _check_rules(head, {"hidden": widths}, "model.head.")
    if m.get("sparse_input") and head.get("type") != HeadType.SKLEARN:
        raise UserError(
            f"model.sparse_input=true applies to scikit-learn-API heads (model.head.type=sklearn, e.g. "
            f"model=tabular_xgb); model.head.type={head.get('type')} reads dense batches: drop the override"
        )
    if head.get("type") == HeadType.SKLEARN:
        est = head.get("estimator")
        if not isinstance(est, DictConfig) or not isinstance(est.get("_target_"), str):
            raise UserError(
                "model.head.type=sklearn needs model.head.estimator={_target_: <estimator class>, ...}, e.g. "
                "'model.head.estimator={_target_: sklearn.linear_model.LogisticRegression}'"
            )


def _check_optimizer(opt: DictConfig) -> None:
    betas = opt.get("betas")
    if betas is not None and not (
        len(betas) == 2 and all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        raise UserError(
            f"optimizer.betas={_show(list(betas))} is not allowed: expected two numbers in [0, 1), e.g. [0.9,0.999]"
        )


def _check_metric(data: DictConfig) -> None:
    from pipeline.metrics import METRICS

    if isinstance(data.get("metric"), DictConfig):  # a custom metric: checked when it is imported
        return
    _check_rules(data, {"metric": one_of(["auto", *METRICS])}, "data.")


def _check_demo(data: DictConfig) -> None:
    from pipeline.data.demos import DEMOS

    _check_rules(data, {"demo": one_of(DEMOS, nullable=True)}, "data.")


def validate(cfg: DictConfig) -> None:
    """Check every value of a composed train or ensemble config; raise one UserError naming the key and the fix."""
    _check_rules(cfg, COMMON)
    check_name(cfg.name)
    _check_metric(cfg.data)
    _check_demo(cfg.data)
    if "model" in cfg:
        _check_rules(cfg, TRAIN)
        _check_model(cfg.model)
        _check_optimizer(cfg.optimizer)
    if "ensemble" in cfg:
        _check_rules(cfg, ENSEMBLE)


# -- The command line, before Hydra: unknown keys, groups and options in one line, then the values -------------
_OPTIONS = re.compile(r"Available options in '([^']+)':\n((?:\t.*\n?)+)")


def _flat_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in cfg.keys():
        full = f"{prefix}{k}"
        keys.append(full)
        node = cfg._get_node(k)
        if isinstance(node, DictConfig):
            keys += _flat_keys(node, f"{full}.")
    return keys


def _compose(config_name: str, overrides: list[str], hydra: bool = True) -> DictConfig:
    from hydra import compose, initialize_config_dir

    import pipeline  # noqa: F401  (registers the path resolvers)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=hydra)


def _model_text(preset: str) -> str:
    """A model preset's file and the files of the presets it builds on (its defaults list), as text."""
    path = CONF_DIR / "model" / f"{preset}.yaml"
    bases = [d for d in OmegaConf.load(path).get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return path.read_text() + "".join(_model_text(b) for b in bases)


def _preference(preset: str) -> tuple[int, str]:
    return (preset not in ("image", "text", "tabular"), preset)


def _unknown_key(config_name: str, overrides: list[str], bad: str, key: str) -> UserError:
    """One line for an override of a key the config does not have, with the closest key that exists."""
    rest = [o for o in overrides if o != bad]
    try:
        cfg = _compose(config_name, rest)
    except Exception:  # noqa: BLE001  (another bad override: suggest from the plain config)
        cfg = _compose(config_name, [])
    if key.startswith("model.") and OmegaConf.select(cfg, "model.kind") == "auto":
        # the modalities' own presets first: the example should be the one a user most likely means
        presets = sorted((p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "auto"), key=_preference)
        leaf = key.rsplit(".", 1)[-1]
        having = [  # composed only where the key's name is written (each composition takes ~0.1 s)
            p
            for p in presets
            if re.search(rf"^\s*{re.escape(leaf)}\s*:", _model_text(p), re.M)
            and key in _flat_keys(_compose(f"model/{p}", [], hydra=False))
        ]
        if having:
            return UserError(
                f"`{bad}`: the default model=auto picks a preset per competition and has no `{key}`: pick a "
                f"preset first, e.g. `model={having[0]} {bad}` (presets with it: {', '.join(having[:4])}"
                f"{', ...' if len(having) > 4 else ''})"
            )
    keys = _flat_keys(cfg)
    close = _close(key, [k for k in keys if k.count(".") == key.count(".")]) or _close(key, keys)
    hint = f"did you mean `{close}`?" if close else "no such key (list them with --cfg job)"
    return UserError(f"unknown config key `{key}` in `{bad}`: {hint} (+{key}=... adds a new key on purpose)")


def _translate(config_name: str, overrides: list[str], e: Exception) -> UserError:
    """Hydra's multi-line composition error as one line that names the override and the closest valid name."""
    msg = str(e)
    bad_key = re.match(r"Could not override '([^']+)'", msg)
    if bad_key:
        key = bad_key.group(1)
        bad = next((o for o in overrides if o.split("=")[0].lstrip("+~") == key), key)
        return _unknown_key(config_name, overrides, bad, key)
    missing = re.search(r"Could not find '([^']+)'", msg)
    options = _OPTIONS.search(msg)
    if missing and options:
        group, choice = missing.group(1).rsplit("/", 1)
        allowed = [o.strip() for o in options.group(2).splitlines() if o.strip()]
        close = _close(choice, allowed)
        hint = f"did you mean `{group}={close}`? " if close else ""
        return UserError(
            f"{group}={choice}: no such option in group '{group}'; {hint}choose one of {', '.join(allowed)}"
        )
    if missing:
        return UserError(f"{missing.group(1)}: no such config group or option ({msg.splitlines()[0]})")
    return UserError(f"the command line does not compose: {msg.splitlines()[0]}")


def _values(o) -> list[str]:
    """The values a sweep override sets (none for an interval or other Optuna range: the sweeper checks those)."""
    try:
        return list(o.sweep_string_iterator())
    except Exception:  # noqa: BLE001
        return []


def _sweeps(cfg: DictConfig, parsed: list) -> dict[str, list[str]]:
    """key -> the values a multirun will set (a preset's hydra.sweeper.params, then the command line's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    given = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.get_key_element(): _values(o) for o in given + [p for p in parsed if p.is_sweep_override()]}


def check_command_line(config_name: str, argv: list[str]) -> None:
    """Compose the entry point's config from `argv` as Hydra would, and validate it (and each sweep value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides = [a for a in argv if not a.startswith("-")]
    if len(overrides) != len(argv) - sum(a in ("-m", "--multirun") for a in argv):
        return  # other Hydra flags (--cfg, --help, -cd...): Hydra handles them
    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except HydraException as e:
            raise UserError(
                f"cannot read the override `{o}`: {str(e).splitlines()[0]} "
                "(quote lists and special characters, e.g. 'model.head.hidden=[256,128]')"
            ) from e
    parsed = parser.parse_overrides(overrides)
    plain = [p.input_line for p in parsed if not p.is_sweep_override()]
    first = [f"{p.get_key_element()}={_values(p)[0]}" for p in parsed if p.is_sweep_override() and _values(p)]
    try:
        cfg = _compose(config_name, plain + first)
    except HydraException as e:
        raise _translate(config_name, plain + first, e) from e
    validate(cfg)
    for key, values in _sweeps(cfg, parsed).items():
        for value in values:
            line = f"{key}={value}"
            try:
                validate(_compose(config_name, [o for o in plain + first if o.split("=")[0] != key] + [line]))
            except HydraException as e:
                raise _translate(config_name, [line], e) from e
