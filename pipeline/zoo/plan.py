"""`experiment=auto`: plan a diverse zoo from what the prepared competition holds, sized by a time budget.

The plan is a list of members, each a list of Hydra overrides on top of the user's command line, with the reason
it is there and its estimated cost. Tier 0 holds cheap, strong members that differ by construction (learner,
view of the data, encoding); tier 1 second seeds, finetunes and learners that err elsewhere (forests, kNN,
RealMLP); tier 2 extra seeds, larger inputs and TabM on a CPU. Members are
trained tier by tier while the budget lasts. Costs are seconds on the 2-core CPU this project is developed on
(5 folds) per 1,000 training rows, measured on the demos; on a GPU the torch members' costs shrink GPU_SPEEDUP x.
"""

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from pipeline.choices import MULTI, REGRESSIONS, Finetune
from pipeline.data.contract import Competition

log = logging.getLogger(__name__)
HIGH_CARD_LEVELS = 50  # data.high_card_min_levels' default
KNN_MAX_ROWS = 100_000  # above it, kNN's distances (training x predicted rows) cost more than the member is worth
KNN_PAIRS = 0.02  # kNN's distances (a BLAS product), s per (1,000 rows)^2: adult estimated 54 s in all, took 30-42
GPU_SPEEDUP = 10.0  # mnist finetune: 165 s on an H200 vs ~750 s per member on 2 CPU cores; more at larger inputs
# an image finetune's size (px; validation and prediction), the smaller sizes of its first epochs (progressive
# resizing) and its cost against COST["image_finetune"]. CPU: epochs at 48 and 64 px, the last at 96, with EMA: on
# mnist (5 folds) CV 0.962, against 0.944 at 48 px throughout without EMA and 0.959 for the best frozen head, for
# 1.5-1.8x the time (docs/benchmarks.md); GPU: every epoch near native size
IMAGE_FINETUNE = {False: (96, [48, 64], 1.6), True: (160, [], (160 / 48) ** 2)}

MPNET = "weights/all-mpnet-base-v2"  # conf/model/text_mpnet.yaml's backbone: there once `make mpnet` has run

# seconds per 1,000 training rows for 5 folds on 2 CPU cores
COST = {
    "gbm": 2.0,  # LightGBM / XGBoost, early-stopped on each fold's validation rows
    "catboost": 6.0,  # adult 1.8, ames (many categoricals) 10
    "tabular_mlp": 3.0,  # ~1.5 on a few thousand rows, ~3 on 100k (where a misestimate costs most)
    "forest": 12.0,  # RandomForest / ExtraTrees, 300 trees: adult 5-6 (sqrt(features) a split), ames 30-35 (all 75)
    "knn": 1.0,  # + KNN_PAIRS x (1,000 rows)^2: reading, encoding, predicting (ames 3 s of 2.3k rows)
    "realmlp": 150.0,  # RealMLP-TD, 256 epochs: ames ~70 s a fold of 1.9k rows on 1 thread of 2 busy cores
    "tabm": 1000.0,  # TabM-D (32 members of 512 units): ames 459 s for a fold of 1.9k rows, on 1 thread
    "tfidf": 1.5,  # rotten (10k rows): 12 s TF-IDF + LogisticRegression, 13 s NB-LR
    "tfidf_gbm": 8.0,  # LightGBM on 5k word n-grams + the tabular features (tweets: ~25 s a fold of 5.5k rows)
    "frozen_head": 1.0,  # a head on cached embeddings
    "embed_gbm": 17.0,  # LightGBM on 384 MiniLM dimensions + the table, early-stopped (tweets: 120 s for 6.9k rows)
    "mpnet_embed": 27.0,  # all-mpnet-base-v2 likewise (rotten: 340 s for 12.8k texts through ONNX Runtime)
    "text_embed": 4.0,  # all-MiniLM-L6-v2 over every train and test row, once, shared by the frozen heads (rotten 50 s)
    "image_embed": 30.0,  # EfficientNet-Lite0 at 224 px over every train and test image, once (~35 images/s)
    "pixels_svm": 1.4,  # an RBF SVM on 28 px grey levels, per (1,000 rows) squared: mnist's 4k images 22 s
    "pixels_read": 2.0,  # reading and shrinking every image once for it (mnist's small PNGs: ~0.5)
    "image_finetune": 45.0,  # EfficientNet-Lite0 at 48 px, 3 epochs x 5 folds: ~30 s a fold for 3,200 images
    "text_finetune": 1000.0,  # all-MiniLM-L6-v2 at 64 tokens: ~120 s per 1k rows and epoch; 2 epochs x 5 folds
}


@dataclass
class Member:
    """One zoo member: overrides on top of the user's command line, why it is there, its estimated cost."""

    overrides: list[str]
    why: str
    cost: float  # estimated seconds
    tier: int = 0
    shared: tuple[str, float] | None = None  # a pass it needs, done once for all that name it: (what, seconds)
    status: str = "planned"  # planned | trained | skipped | failed
    model_id: str | None = None
    seconds: float | None = None  # taken (a member found complete: what its training took then)
    cv_score: float | None = None
    note: str = ""
    # the runner's correction of `cost` by what this run's members took (pipeline/zoo/run.py: Zoo.expect)
    ratio: float | None = None  # taken / estimated seconds of the members already trained like this one
    estimate: float | None = None  # seconds expected when deciding: ratio x (cost + the shared pass if unpaid)

    def as_dict(self) -> dict:
        return asdict(self)


def default_model(comp: Competition) -> str:
    """The modality's best single default (a `conf/model/` preset), for a run without `model=`."""
    if comp.image_col:
        return "image"  # the pretrained EfficientNet-Lite0 finetuned at 1/10 of the head's LR
    if comp.text_col:  # rotten: CV 0.872 (NB-LR) and 0.866 (LR) in ~15 s vs 0.83-0.84 for heads on MiniLM embeddings
        return "text_tfidf" if comp.task in REGRESSIONS else "text_nb"
    return "tabular_lgbm"


def reseed(m: Member, seed: int, tier: int) -> Member:
    overrides = [f"seed={seed}" if o.startswith("seed=") else o for o in m.overrides]
    return Member(overrides, f"{m.why} (seed {seed})", m.cost, tier, m.shared)


def linear_head(task: str) -> str:
    """A linear sklearn head on embeddings: the 'frozen features + linear model' anchor, as a member."""
    est = (
        "{_target_:sklearn.linear_model.Ridge,alpha:1.0}"
        if task in REGRESSIONS
        else "{_target_:sklearn.linear_model.LogisticRegression,C:1.0,max_iter:3000}"
    )
    return f"model.head.estimator={est}"


def frozen_heads(frozen: list[str], task: str, what: str, cost: float, features: tuple) -> list[Member]:
    """A linear and an MLP head on frozen features (`what`), paying for their shared embedding pass once."""
    return [
        Member(
            [*frozen, "model.head.type=sklearn", linear_head(task), "seed=0"],
            f"linear model on {what}",
            cost,
            shared=features,
        ),
        Member([*frozen, "seed=0"], f"MLP on {what}", cost, shared=features),
    ]


def lgbm_head() -> list[str]:
    """LightGBM on embeddings joined with the tabular features (Classifier becomes Regressor by task)."""
    est = "{_target_:lightgbm.LGBMClassifier,n_estimators:3000,learning_rate:0.05,colsample_bytree:0.5,verbose:-1}"
    return ["model.head.type=sklearn", f"model.head.estimator={est}"]


def high_cardinality(comp: Competition, levels: int = HIGH_CARD_LEVELS) -> list[str]:
    """The categorical feature columns (not dates) with at least `levels` levels: one-hot encoding groups most of
    their levels away, so some members see them count- and target-encoded."""
    return [
        c
        for c in comp.feature_cols
        if c not in comp.datetime_cols
        and not pd.api.types.is_numeric_dtype(comp.train[c])
        and levels <= comp.train[c].nunique() < len(comp.train)
    ]


def tabular_members(comp: Competition, mixed: bool, gpu: bool = False) -> list[Member]:
    """Trees from three libraries, an MLP and a second encoding: different by construction, then other learners
    (`other_learners`), then more seeds. Beside a text column each sees its statistics. Many-level categoricals
    reach them count- and target-encoded (one-hot codes of thousands of levels would make the table thousands of
    columns wide), except where CatBoost and a LightGBM twin split on the categories themselves."""
    k, gbm, mlp = len(comp.train) / 1000, COST["gbm"], COST["tabular_mlp"]
    cats = any(not pd.api.types.is_numeric_dtype(comp.train[c]) for c in comp.feature_cols)
    stats = ["data.text_stats=true"] if comp.text_col else []
    view = table_view(comp)
    core = [
        Member(["model=tabular_lgbm", *view, "seed=0"], "LightGBM, early-stopped per fold: a strong default", k * gbm),
        Member(
            ["model=tabular_catboost", *stats, "seed=0"],
            "CatBoost: ordered boosting, native categoricals",
            k * COST["catboost"],
        ),
        Member(["model=tabular", *view, "seed=0"], "MLP on standardized features: smooth, unlike trees", k * mlp),
        Member(["model=tabular_xgb", *view, "seed=0"], "XGBoost: depth-wise trees, a third library", k * gbm),
    ]
    if cats:
        core.append(
            Member(
                ["model=tabular_lgbm", "model.categorical_encoding=native", *stats, "seed=0"],
                "LightGBM splitting on the categories themselves: another encoding of the same columns",
                k * gbm,
            )
        )
    # XGBoost as AutoGluon runs it: every row and column, the raw values in a sparse matrix, where XGBoost reads a
    # zero (an absent category, a zero amount) as missing and learns where those rows go at each split. Less
    # randomized than the bagged preset, and its zeros are not values: it errs elsewhere (adult: AUC CV 0.93035 vs
    # the preset's 0.93019, test 0.92968 vs 0.92869; ames: CV 4 % worse RMSE, where the ensemble leaves it out)
    whole = ["model=tabular_xgb", "model.head.estimator.subsample=1.0", "model.head.estimator.colsample_bytree=1.0"]
    whole += ["model.numeric_scaling=none", "model.sparse_input=true", *view]
    core.append(Member([*whole, "seed=0"], "XGBoost on every row and column, zeros as missing: a twin", k * gbm, 1))
    if mixed:  # beside text or images: the tabular view's two strongest members first, the rest later
        for m in core[2:]:
            m.tier = 1
        return core + other_learners(comp, view, gpu)
    return core + other_learners(comp, view, gpu) + [reseed(m, s, s) for s in (1, 2) for m in core[:3]]


def other_learners(comp: Competition, view: list[str], gpu: bool) -> list[Member]:
    """Learners that err elsewhere than the core's boosted trees, for the ensemble's second level: shallow and deep
    LightGBM, bagged and randomized forests, kNN (cheap: tier 1), RealMLP and TabM (networks: on a CPU they cost ~75x
    and ~500x LightGBM, so TabM waits for tier 2 there)."""
    k, speed = len(comp.train) / 1000, GPU_SPEEDUP if gpu else 1
    learners = [  # preset, why, estimated seconds, tier
        ("tabular_lgbm_shallow", "LightGBM of 4-leaf trees: near additive", k * COST["gbm"], 1),
        ("tabular_lgbm_deep", "LightGBM of 255-leaf trees: high-order interactions", k * COST["gbm"], 1),
        ("tabular_rf", "random forest: bagged deep trees", k * COST["forest"], 1),
        ("tabular_et", "extra trees: random split thresholds", k * COST["forest"], 1),
        ("tabular_knn", "k nearest neighbours on clipped z-scores", k * COST["knn"] + k * k * KNN_PAIRS, 1),
        (
            "tabular_realmlp",
            "RealMLP-TD: an MLP with tuned defaults, numeric embeddings",
            k * COST["realmlp"] / speed,
            1,
        ),
        ("tabular_tabm", "TabM-D: 32 weight-sharing MLPs trained as one", k * COST["tabm"] / speed, 1 if gpu else 2),
    ]
    if len(comp.train) > KNN_MAX_ROWS:
        learners = [x for x in learners if x[0] != "tabular_knn"]
    return [Member([f"model={p}", *view, "seed=0"], why, cost, tier) for p, why, cost, tier in learners]


def text_members(comp: Competition, gpu: bool, has_tab: bool) -> list[Member]:
    """TF-IDF (text view), heads on frozen MiniLM embeddings (joined with the tabular features), a finetune."""
    k = len(comp.train) / 1000
    head = k * COST["frozen_head"]
    only_text = ["data.feature_cols=[]"] if has_tab else []
    embed = k * 1.25 * COST["text_embed"] / (GPU_SPEEDUP if gpu else 1)  # test rows too: ~1/4 more
    frozen = ["model=text", f"model.finetune={Finetune.FROZEN}"]
    joined = " joined with the tabular features" if has_tab else ""
    features = ("MiniLM embeddings", embed)  # cached: the first head to train pays for the pass
    members = [
        Member(
            ["model=text_tfidf", "seed=0", *only_text],
            "TF-IDF word + char n-grams, linear: the text view",
            k * COST["tfidf"],
        ),
        *frozen_heads(frozen, comp.task, f"frozen all-MiniLM-L6-v2 embeddings{joined}", head, features),
        Member(
            [*frozen, "model.head.hidden=[512,256]", "seed=1"],
            "a deeper MLP on the same embeddings",
            head,
            1,
            features,
        ),
    ]
    if Path(MPNET).is_dir():  # `make mpnet` has joined the stronger encoder: its frozen heads, once the plan is in
        shared = ("all-mpnet-base-v2 embeddings", embed * COST["mpnet_embed"] / COST["text_embed"])
        what = f"frozen all-mpnet-base-v2 embeddings{joined}"
        big = ["model=text_mpnet", f"model.finetune={Finetune.FROZEN}"]
        members += [replace(m, tier=1) for m in frozen_heads(big, comp.task, what, head, shared)]
    else:
        log.info("zoo: `make mpnet` adds heads on frozen all-mpnet-base-v2 (rotten: test AUC 0.900 -> 0.947)")
    if comp.task not in REGRESSIONS:  # NB-LR first: stronger alone (rotten test AUC 0.881 vs 0.872), as cheap
        why = "TF-IDF scaled by Naive Bayes log-count ratios, logistic regression (NBSVM): the text view"
        members.insert(0, Member(["model=text_nb", "seed=0", *only_text], why, k * COST["tfidf"]))
    if has_tab:
        members = joined_members(comp) + members
        why = f"LightGBM on MiniLM embeddings{joined}"
        members.append(Member([*frozen, *lgbm_head(), "seed=0"], why, k * COST["embed_gbm"], shared=features))
    finetune = k * COST["text_finetune"] / (GPU_SPEEDUP if gpu else 1)
    tune = ["model=text_finetune", "trainer.max_epochs=2", "trainer.batch_size=32", "data.max_length=64", *only_text]
    first = Member([*tune, "seed=0"], "MiniLM finetuned end to end at 1/10 LR", finetune, 1)
    if has_tab:  # late fusion: the pooled text embedding and the tabular features side by side into one MLP head
        fusion = [o for o in tune if o not in only_text] + table_view(comp)
        why = "MiniLM finetuned at 1/10 LR jointly with an MLP over the tabular features (late fusion)"
        first = Member([*fusion, "seed=0"], why, finetune, 1)
    return [*members, first, Member([*tune, "seed=1"], "a finetune seed on the text alone", finetune, 2)]


def table_view(comp: Competition) -> list[str]:
    """The table as the joined, fusion and most tabular members read it: with the text columns' statistics and the
    many-level categoricals target-encoded."""
    stats = ["data.text_stats=true"] if comp.text_col else []
    return stats + (["data.high_card_encoding=target"] if high_cardinality(comp) else [])


def joined_members(comp: Competition) -> list[Member]:
    """TF-IDF n-grams side by side with the tabular features (their text statistics and date parts included,
    many-level categoricals target-encoded): a word and a column in one model, linear and in trees."""
    k = len(comp.train) / 1000
    view = table_view(comp)
    linear = "model=text_tfidf" if comp.task in REGRESSIONS else "model=text_nb"
    return [
        Member(
            [linear, *view, "seed=0"],
            "TF-IDF n-grams joined with the tabular features, linear: a word and a column in one model",
            k * COST["tfidf"],
        ),
        Member(
            ["model=text_lgbm", *view, "seed=0"],
            "LightGBM on TF-IDF n-grams joined with the tabular features",
            k * COST["tfidf_gbm"],
        ),
    ]


def native_size(backbone: str) -> int:
    """The input size the backbone was pretrained at (timm's pretrained config), e.g. 224."""
    import timm

    try:
        return int(timm.get_pretrained_cfg(backbone).input_size[-1])
    except Exception:  # an unknown or local-only name: ImageNet's usual size
        return 224


def frozen_size(backbone: str, images: float, budget: float, gpu: bool) -> int:
    """The largest of the backbone's native size, 192, 160 and 128 px whose embedding pass over every image
    (`images` thousands) fits in a tenth of the budget: features at the pretraining size are the best."""
    native = native_size(backbone)
    sizes = [native] + [s for s in (192, 160, 128) if s < native]
    speed = GPU_SPEEDUP if gpu else 1
    fits = [s for s in sizes if images * COST["image_embed"] * (s / 224) ** 2 / speed <= budget / 10]
    return fits[0] if fits else sizes[-1]


def image_members(comp: Competition, gpu: bool, has_tab: bool, backbone: str, budget: float, hflip: bool):
    """Heads on frozen features at the backbone's size (or the largest the budget allows), finetuned members
    (two seeds first) with flip TTA when images may be mirrored (`data.hflip`)."""
    k, speed = len(comp.train) / 1000, GPU_SPEEDUP if gpu else 1
    head = k * COST["frozen_head"]
    images = k + len(comp.test) / 1000
    size = frozen_size(backbone, images, budget, gpu)
    frozen = ["model=image", f"model.finetune={Finetune.FROZEN}", f"model.backbone.input_size={size}"]
    embed = images * COST["image_embed"] * (size / 224) ** 2 / speed
    px, sizes, scale = IMAGE_FINETUNE[gpu]
    at_px = [f"model.backbone.input_size={px}"] + (
        [f"model.train_sizes=[{','.join(map(str, sizes))}]"] if sizes else []
    )
    tune = ["model=image", f"model.finetune={Finetune.FULL}"]
    tune += ["model.tta=true"] if hflip else ["model.augment.hflip=false"]  # a mirrored digit is another symbol
    tune += ["trainer.max_epochs=3", "optimizer.lr=3e-3", "trainer.batch_size=32"]  # conf/experiment/mnist_finetune
    tune += ["trainer.ema=true"]  # EMA of the weights: mnist CV +0.011 +- 0.003 at 48 px, +0.004 +- 0.003 progressive
    tune += ["data.feature_cols=[]"] if has_tab else []
    cost = k * COST["image_finetune"] * scale / speed
    joined = " joined with the tabular features" if has_tab else ""
    features = (f"image features at {size} px", embed)  # cached: the first head to train pays for the pass
    members = frozen_heads(frozen, comp.task, f"frozen features at {size} px{joined}", head, features)
    if comp.task not in REGRESSIONS:  # no network at all: another view of the images, cheap below ~20k of them
        only_pixels = ["data.feature_cols=[]"] if has_tab else []
        why = "RBF SVM on the images' own grey levels at 28 px: no ImageNet features, other errors"
        pixels = k * k * COST["pixels_svm"] + images * COST["pixels_read"]
        # the backbone keys spelled out: they win over a model.backbone.* the user gave for the other members
        pix = ["model=image_pixels", "model.backbone.name=pixels", "model.backbone.weights=null"]
        pix += ["model.backbone.input_size=28"]
        members.append(Member([*pix, "seed=0", *only_pixels], why, pixels))
    at = f"{px} px" + (f" (the first epochs at {', '.join(map(str, sizes))})" if sizes else "")
    first = Member([*tune, *at_px, "seed=0"], f"finetuned end to end at {at}, backbone at 1/10 LR", cost)
    if has_tab:  # late fusion: the pooled image features and the tabular features into one MLP head
        fusion = [o for o in tune if o != "data.feature_cols=[]"] + at_px + table_view(comp)
        first = Member([*fusion, "seed=0"], f"finetuned at {at} jointly with an MLP over the table (fusion)", cost)
    second = Member([*tune, *at_px, "seed=1"], "a second finetune seed: finetunes differ more than heads", cost, 1)
    if sizes:  # a CPU: the second finetune at the first size throughout, 1/1.6 the cost; other pixels, other errors
        why = f"a second finetune, at {sizes[0]} px throughout: cheaper, and another resolution errs elsewhere"
        second = Member([*tune, f"model.backbone.input_size={sizes[0]}", "seed=1"], why, cost / scale, 1)
    return members + [
        first,
        second,
        Member(
            [*frozen, "model.head.hidden=[512,256]", "seed=1"],
            "a deeper MLP on the frozen features",
            head,
            1,
            features,
        ),
        Member([*tune, *at_px, "seed=2"], "a third finetune seed", cost, 2),
    ]


# presets with a scikit-learn (API) head (head.type: sklearn, theirs or their parent's): several targets fit one
# model each, so their cost grows with the targets; a network's head only grows wider (tests/test_zoo.py checks it)
SKLEARN_PRESETS = frozenset(
    ("distill", "image_pixels", "tabular_catboost", "tabular_et", "tabular_hgb", "tabular_knn", "tabular_lgbm")
    + ("tabular_lgbm_deep", "tabular_lgbm_shallow", "tabular_realmlp", "tabular_rf", "tabular_tabm", "tabular_xgb")
    + ("text_lgbm", "text_nb", "text_tfidf")
)


def per_target(m: Member) -> bool:
    """The member fits one model per target (an sklearn head), not one network for all."""
    preset = next((o.split("=", 1)[1] for o in m.overrides if o.startswith("model=")), None)
    return "model.head.type=sklearn" in m.overrides or preset in SKLEARN_PRESETS


def plan(
    comp: Competition,
    gpu: bool,
    tt: list[str],
    backbone: str = "tf_efficientnet_lite0",
    budget: float = 900.0,
    hflip: bool = True,
) -> list[Member]:
    """Every member the competition's views allow, by tier; `tt` (a target transform override) goes to all."""
    has_tab = bool(comp.feature_cols)
    mixed = bool(comp.image_col or comp.text_col)
    members: list[Member] = []
    if comp.image_col:
        members += image_members(comp, gpu, has_tab, backbone, budget, hflip)
    if comp.text_col:
        members += text_members(comp, gpu, has_tab)
    if has_tab:
        members += tabular_members(comp, mixed, gpu)
    for m in members:
        m.overrides += tt
        if comp.task in MULTI and per_target(m):
            m.cost *= len(comp.classes)
    return sorted(members, key=lambda m: m.tier)  # stable: the order within a tier is kept
