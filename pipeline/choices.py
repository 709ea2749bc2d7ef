"""The allowed values of every config choice, defined once: the schema, the code and the advisor import them.

Each set is a `StrEnum`: a member compares equal to its string (`cfg.model.finetune == Finetune.FROZEN` holds for
the config value "frozen"), and `list(Finetune)` is what the schema accepts. Modules that implement a choice map
these names to code (heads.py: activation -> torch layer); a test checks that every name has its implementation.
"""

from enum import StrEnum


class Task(StrEnum):
    """`data.task`: auto infers it from the target (pipeline/data/contract.py `infer_task`)."""

    AUTO = "auto"
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"
    MULTILABEL = "multilabel"  # several 0/1 labels per row: data.target=[a,b,c], or one column and data.label_sep
    MULTIREGRESSION = "multiregression"  # several numeric targets: data.target=[y1,y2]


MULTI = (Task.MULTILABEL, Task.MULTIREGRESSION)  # one prediction column per target; the members fit each target
REGRESSIONS = (Task.REGRESSION, Task.MULTIREGRESSION)  # values, not probabilities


class CVScheme(StrEnum):
    """`cv.scheme`: auto = group when data.group_col is set, stratified for classes, kfold for regression."""

    AUTO = "auto"
    STRATIFIED = "stratified"
    KFOLD = "kfold"
    GROUP = "group"
    HOLDOUT = "holdout"
    TIME = "time"  # expanding window over data.time_col: each fold validates rows later than all it trains on


class Encoding(StrEnum):
    """`data.categorical_encoding` / `model.categorical_encoding`."""

    ONEHOT = "onehot"
    ORDINAL = "ordinal"
    NATIVE = "native"  # integer codes declared categorical to the tree libraries


class Scaling(StrEnum):
    """`data.numeric_scaling` / `model.numeric_scaling`."""

    STANDARD = "standard"
    QUANTILE = "quantile"
    CLIPPED = "clipped"
    NONE = "none"  # the raw values (median-imputed): trees need no scaling, and zeros stay zeros (sparse_input)


class HighCardinality(StrEnum):
    """`data.high_card_encoding`: categorical columns with at least `data.high_card_min_levels` levels."""

    NONE = "none"  # encoded as the other categoricals (`categorical_encoding`, rare levels grouped)
    COUNT = "count"  # log(1 + the level's count in the fold's training rows)
    TARGET = "target"  # out-of-fold target encoding (cross-fitted inside the fold's training rows) + count


class ModelKind(StrEnum):
    """`model.kind`: what the model reads (auto: the training entry point picks the data's default preset)."""

    AUTO = "auto"
    IMAGE = "image"
    TEXT = "text"
    TABULAR = "tabular"
    TFIDF = "tfidf"


BACKBONE_KINDS = (ModelKind.IMAGE, ModelKind.TEXT)  # the kinds with a pretrained backbone and a finetune mode


class Finetune(StrEnum):
    """`model.finetune`: how a pretrained backbone trains (null for the kinds without a backbone)."""

    FULL = "full"
    FROZEN = "frozen"  # head only, on cached embeddings
    PROBE_THEN_FULL = "probe_then_full"


TRAINS_BACKBONE = (Finetune.FULL, Finetune.PROBE_THEN_FULL)


def is_frozen(model) -> bool:
    """True when a model's pretrained backbone stays frozen (its head trains on cached embeddings); `model`: a
    `model` config, or anything with its `finetune` key (false without one: the kinds without a backbone)."""
    return model.get("finetune") == Finetune.FROZEN


class HeadType(StrEnum):
    """`model.head.type` (auto: only with model.kind=auto, replaced by the chosen preset's head)."""

    AUTO = "auto"
    LINEAR = "linear"
    MLP = "mlp"
    SKLEARN = "sklearn"


class Activation(StrEnum):
    """`model.head.activation` of MLP heads (sigmoid is accepted, and warned against)."""

    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    GELU = "gelu"
    TANH = "tanh"
    SIGMOID = "sigmoid"


class HeadInit(StrEnum):
    """`model.head.init` (optional key, set with +model.head.init=...)."""

    XAVIER = "xavier"
    KAIMING = "kaiming"
    ZEROS = "zeros"
    CONSTANT = "constant"


class Pooling(StrEnum):
    """`model.backbone.pooling` of text encoders."""

    CLS = "cls"
    MEAN = "mean"


class Loss(StrEnum):
    """`model.loss` (auto: cross-entropy for classes, MSE for regression)."""

    AUTO = "auto"
    CROSS_ENTROPY = "cross_entropy"
    BCE = "bce"
    MSE = "mse"
    MAE = "mae"
    SMOOTH_L1 = "smooth_l1"


REGRESSION_LOSSES = (Loss.MSE, Loss.MAE, Loss.SMOOTH_L1)


class TargetTransform(StrEnum):
    """`model.target_transform` (regression)."""

    NONE = "none"
    LOG1P = "log1p"


class Scheduler(StrEnum):
    """`scheduler.name` (the scheduler group's file names)."""

    NONE = "none"
    COSINE = "cosine"
    STEP = "step"
    PLATEAU = "plateau"
    ONECYCLE = "onecycle"


class Accelerator(StrEnum):
    """`trainer.accelerator` (Lightning's names)."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(StrEnum):
    """`trainer.precision` (Lightning's names)."""

    FULL = "32-true"
    DOUBLE = "64-true"
    MIXED16 = "16-mixed"
    BF16_MIXED = "bf16-mixed"
    HALF = "16-true"
    BF16 = "bf16-true"


class ZooTransform(StrEnum):
    """`zoo.target_transform` of experiment=auto."""

    AUTO = "auto"
    NONE = "none"


class EnsembleMethod(StrEnum):
    """`ensemble.method`: auto tries every method the task allows; simplest first (ties keep the simpler)."""

    AUTO = "auto"
    MEAN = "mean"
    RANK = "rank"
    GEOMETRIC = "geometric"
    VOTE = "vote"
    WEIGHTED = "weighted"
    HILLCLIMB = "hillclimb"
    STACKING = "stacking"
    LEVEL2 = "level2"


class Select(StrEnum):
    """`ensemble.select`: how auto picks between the methods and the best member."""

    GAIN = "gain"
    BEST = "best"
    ONE_SE = "one_se"


class WeightOptimizer(StrEnum):
    """`ensemble.weighted.optimizer`."""

    CARUANA = "caruana"
    SCIPY = "scipy"


def is_pretrained(kind: str, backbone) -> bool:
    """True when a backbone starts from pretrained weights: `weights` set (an image backbone's null means random
    init; a text backbone without the key, an older config, is pretrained as conf/model/text.yaml says)."""
    return bool(backbone.get("weights", "pretrained" if kind == ModelKind.TEXT else None))
