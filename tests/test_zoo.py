"""experiment=auto: the plan follows the competition's views and task, and the zoo trains members of every view."""

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.data.tabular import skewed_positive
from pipeline.models.backbones import image_backbone
from pipeline.prepare import prepare
from pipeline.train import fit
from pipeline.zoo import plan as plan_module
from pipeline.zoo.plan import Member, default_model, frozen_size, native_size, plan
from pipeline.zoo.run import Zoo, compose_member, fill, train_zoo

ROOT = Path(__file__).resolve().parents[1]
OTHERS = "tabular_lgbm_,tabular_rf,tabular_et,tabular_knn,tabular_realmlp,tabular_tabm"  # zoo.skip: other_learners


def models(members) -> list[str]:
    return [" ".join(m.overrides) for m in members]


def test_default_model_follows_the_data(make_comp, make_cfg, tmp_path):
    text_regression = {"text": True, "labels": (0.5, 1.7, 2.25, 3.1, 4.8)}
    cases = [
        ({}, "tabular_lgbm"),
        ({"text": True}, "text_nb"),
        (text_regression, "text_tfidf"),
        ({"images": True}, "image"),
    ]
    for kw, want in cases:
        comp = make_comp(name=want, **kw)
        cfg = make_cfg(comp, f"paths.output_dir={tmp_path / want}")
        assert default_model(prepare(cfg).comp) == want


def test_tabular_plan_mixes_libraries_and_encodings(make_comp, make_cfg):
    comp = prepare(make_cfg(make_comp())).comp
    planned = models(plan(comp, gpu=False, tt=[]))
    for preset in ("model=tabular_lgbm", "model=tabular_catboost", "model=tabular_xgb", "model=tabular "):
        assert any(preset.strip() in p.split() for p in planned), preset
    assert any("model.categorical_encoding=native" in p for p in planned)  # `cat` is a string column
    assert any("model.head.estimator.subsample=1.0" in p for p in planned)  # XGBoost without row sampling
    assert not any("model=text" in p or "model=image" in p for p in planned)


def test_text_plan_adds_mpnet_heads_once_its_weights_are_joined(make_comp, make_cfg, tmp_path, monkeypatch):
    """After `make mpnet`: a linear and an MLP head on frozen all-mpnet-base-v2 embeddings, in tier 1 (after the
    plan's cheap members), sharing one embedding pass; before it, none."""
    assert OmegaConf.load(ROOT / "conf" / "model" / "text_mpnet.yaml").backbone.name == plan_module.MPNET
    comp = prepare(make_cfg(make_comp(text=True))).comp
    monkeypatch.setattr(plan_module, "MPNET", str(tmp_path / "absent"))
    assert not any("model=text_mpnet" in m.overrides for m in plan(comp, gpu=False, tt=[]))
    monkeypatch.setattr(plan_module, "MPNET", str(tmp_path))
    mpnet = [m for m in plan(comp, gpu=False, tt=[]) if "model=text_mpnet" in m.overrides]
    assert len(mpnet) == 2 and {m.tier for m in mpnet} == {1} and mpnet[0].shared == mpnet[1].shared


def test_tabular_plan_adds_learners_that_err_elsewhere(make_comp, make_cfg, monkeypatch):
    """Forests, kNN, shallow and deep LightGBM and RealMLP after the core (tier 1); TabM, 500x LightGBM's cost on a
    CPU, in tier 2 there and tier 1 on a GPU; kNN not above KNN_MAX_ROWS."""
    comp = prepare(make_cfg(make_comp())).comp
    others = ["model=tabular_" + p for p in ("lgbm_shallow", "lgbm_deep", "rf", "et", "knn", "realmlp", "tabm")]
    for gpu in (False, True):
        tiers = {m.overrides[0]: m.tier for m in plan(comp, gpu=gpu, tt=[]) if m.overrides[0] in others}
        assert tiers == dict.fromkeys(others, 1) | {"model=tabular_tabm": 1 if gpu else 2}
    monkeypatch.setattr("pipeline.zoo.plan.KNN_MAX_ROWS", len(comp.train) - 1)
    assert "model=tabular_knn" not in {m.overrides[0] for m in plan(comp, gpu=False, tt=[])}


def test_mixed_plan_has_each_view_and_a_joined_one(make_comp, make_cfg):
    comp = prepare(make_cfg(make_comp(text=True))).comp
    planned = plan(comp, gpu=False, tt=["model.target_transform=log1p"])
    text_view = [p for p in models(planned) if "data.feature_cols=[]" in p and "model=text_finetune" not in p]
    assert {p.split()[0] for p in text_view} == {"model=text_nb", "model=text_tfidf"}  # the text alone
    joined = [p for p in models(planned) if "model.finetune=frozen" in p and "feature_cols" not in p]
    assert joined  # frozen embeddings + the tabular features
    ngrams = [p for p in models(planned) if p.split()[0] in ("model=text_nb", "model=text_lgbm")]
    assert len([p for p in ngrams if "feature_cols" not in p and "data.text_stats=true" in p]) == 2  # n-grams + table
    assert any("model=tabular_lgbm" in p for p in models(planned))  # the tabular view
    assert all("model.target_transform=log1p" in p for p in models(planned))
    assert [m.tier for m in planned] == sorted(m.tier for m in planned)


def test_image_plan_uses_native_size_and_finetunes(make_comp, make_cfg, tmp_path):
    comp = prepare(make_cfg(make_comp(images=True))).comp
    planned = models(plan(comp, gpu=False, tt=[]))
    assert native_size("tf_efficientnet_lite0") == 224
    assert any("model.finetune=frozen" in p and "input_size=224" in p for p in planned)  # 60 images: cheap
    finetunes = [p for p in planned if "model.finetune=full" in p]
    assert len(finetunes) >= 2  # two finetune seeds at least
    assert "input_size=96" in finetunes[0] and "model.train_sizes=[48,64]" in finetunes[0]  # progressive on a CPU
    assert "input_size=48" in finetunes[1] and "train_sizes" not in finetunes[1]  # then a cheaper one at 48 px
    assert not any("train_sizes" in p for p in models(plan(comp, gpu=True, tt=[])))  # a GPU: native size throughout
    assert any("model=image_pixels" in p for p in planned)  # the images' own pixels: another view
    reg = make_comp(images=True, labels=(0.5, 1.7, 2.25, 3.1), name="reg")
    regression = prepare(make_cfg(reg, f"paths.output_dir={tmp_path / 'reg'}")).comp
    assert not any("model=image_pixels" in p for p in models(plan(regression, gpu=False, tt=[])))  # unmeasured


def test_pixels_member_keeps_its_backbone_when_the_user_names_one(make_comp, make_cfg):
    """`model.backbone.name=resnet18` on the command line is for the network members, not for the pixels one."""
    comp = prepare(make_cfg(make_comp(images=True))).comp
    member = next(m for m in plan(comp, gpu=False, tt=[]) if "model=image_pixels" in m.overrides)
    user = ["data=mnist", "model.backbone.name=resnet18", "model.backbone.weights=hub", "model.backbone.input_size=64"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        backbone = compose_member(user, member).model.backbone
    assert (backbone.name, backbone.weights, backbone.input_size) == ("pixels", None, 28)


def test_pixels_are_the_images_own_grey_levels(make_comp, make_cfg):
    """`model.backbone.name=pixels`: no network, the grey level of each pixel at input_size, in [-1, 1]."""
    backbone = image_backbone(make_cfg(make_comp(images=True), "model=image_pixels").model.backbone)
    assert backbone.dim == 28 * 28 and not list(backbone.module.parameters())
    image = torch.stack([torch.full((28, 28), v) for v in (-1.0, 0.0, 0.5)])[None]  # R, G, B planes
    assert torch.allclose(backbone.module(image), torch.full((1, 28 * 28), -0.5 / 3))


def test_skewed_positive():
    rng = np.random.default_rng(0)
    assert skewed_positive(rng.lognormal(12, 0.5, 2000))
    assert not skewed_positive(rng.normal(0, 1, 2000))
    assert not skewed_positive(-rng.lognormal(0, 1, 2000))


def overrides_for(comp, out: Path, *extra: str, trials: int = 0) -> list[str]:
    """A data=csv zoo on comp; no Optuna search (`trials=0`) unless a test is about it."""
    return [
        "experiment=auto",
        "data=csv",
        f"data.train_csv={comp.train_csv}",
        "data.target=y",
        "data.text_col=text",
        f"paths.output_dir={out}",
        "trainer.max_epochs=2",
        "trainer.progress_bar=false",
        "cv.n_folds=3",
        f"zoo.search_trials={trials}",
        *extra,
    ]


@pytest.mark.slow
def test_auto_zoo_trains_every_view_and_records_it(make_comp, tmp_path):
    comp = make_comp(n_train=60, n_test=12, text=True)
    out = tmp_path / "zoo"
    overrides = overrides_for(
        comp, out, f"zoo.skip=[text_finetune,text_mpnet,catboost,xgb,native,'seed=1','seed=2',{OTHERS}]"
    )
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        members = train_zoo(cfg, prepare(cfg), overrides, fit)
    trained = [m for m in members if m.status == "trained"]
    assert [m.note for m in members if m.status == "failed"] == []
    ids = [m.model_id for m in trained]
    assert any(i.startswith("tfidf") for i in ids)  # the text view
    assert any(i.startswith("tabular-") for i in ids)  # the tabular view
    assert any("frozen" in i for i in ids)  # frozen MiniLM embeddings joined with the tabular features
    doc = json.loads((out / "zoo.json").read_text())
    assert [m["model_id"] for m in doc["members"] if m["status"] == "trained"] == ids
    assert all((out / "models" / i / "metrics.json").is_file() for i in ids)
    assert doc["views"] == {"tabular": 2, "text": "text", "image": None}


@pytest.mark.slow
def test_new_competition_commands_end_to_end(make_comp, tmp_path):
    """The README's two commands on a competition given only by data=csv overrides: train (auto) and ensemble.
    Every view and the ensemble take part; the XGBoost and native-categorical members are left out, as in
    test_auto_zoo_trains_every_view_and_records_it (tests/test_tabular_models.py trains those heads)."""
    comp = make_comp(n_train=60, n_test=20, text=True)
    out = tmp_path / "e2e"
    train = overrides_for(
        comp,
        out,
        f"zoo.skip=[text_finetune,text_mpnet,catboost,xgb,native,'seed=1','seed=2',{OTHERS}]",
        "hydra.sweep.dir=" + str(tmp_path),
    )
    run = [sys.executable, "-m", "pipeline.train", "-m", *train]
    subprocess.run(run, cwd=ROOT, check=True, capture_output=True)
    ens = [sys.executable, "-m", "pipeline.ensemble", "data=csv", f"data.train_csv={comp.train_csv}", "data.target=y"]
    ens += ["data.text_col=text", f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'run'}"]
    subprocess.run(ens, cwd=ROOT, check=True, capture_output=True)
    sub = pd.read_csv(out / "submission.csv")
    assert len(sub) == 20 and sub["id"].tolist() == comp.test["id"].tolist()


@pytest.mark.slow
def test_no_model_given_trains_the_modality_default(make_comp, tmp_path):
    comp = make_comp(n_train=60, n_test=12)
    out = tmp_path / "one"
    run = [sys.executable, "-m", "pipeline.train", "data=csv", f"data.train_csv={comp.train_csv}", "data.target=y"]
    run += [f"paths.output_dir={out}", "cv.n_folds=3", f"hydra.run.dir={tmp_path / 'run'}"]
    subprocess.run(run, cwd=ROOT, check=True, capture_output=True)
    assert [p.name.split("-")[1] for p in (out / "models").iterdir()] == ["lgbmclassifier"]


def test_frozen_size_shrinks_to_fit_the_budget():
    assert frozen_size("tf_efficientnet_lite0", images=0.1, budget=900, gpu=False) == 224
    assert frozen_size("tf_efficientnet_lite0", images=5.0, budget=900, gpu=False) == 160  # mnist on 2 cores
    assert frozen_size("tf_efficientnet_lite0", images=5.0, budget=900, gpu=True) == 224
    assert frozen_size("tf_efficientnet_lite0", images=5.0, budget=3600, gpu=False) == 224


@pytest.mark.slow
def test_budget_left_buys_seeds_of_the_best_seeded_families(make_comp, tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.zoo.run.MAX_SEED", 3)  # one extra seed per family keeps the test short
    comp = make_comp(n_train=60, n_test=12)
    out = tmp_path / "fill"
    overrides = [o for o in overrides_for(comp, out, f"zoo.skip=[catboost,xgb,native,{OTHERS}]") if "text_col" not in o]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        members = train_zoo(cfg, prepare(cfg), overrides, fit)
    extra = {" ".join(m.overrides): m for m in members if m.tier == 4}
    stopped = json.loads((out / "zoo.json").read_text()).get("seeds_stopped", {})
    for family in ("model=tabular", "model=tabular_lgbm"):  # the two seeded families: a 4th seed, or a reason
        assert (f"{family} seed=3" in extra) != (family in stopped)
    assert all(m.status == "trained" for m in extra.values())


def fake_fit(noise: dict[str, float]):
    """Instead of training: out-of-fold probabilities for the true labels, blurred by `noise[model]` logits of
    the seed's own noise (0: every seed the same). What is tested is which seeds the zoo asks for."""

    def fit_(mcfg, prep):
        c, name = prep.comp, mcfg.model.head.type  # sklearn (LightGBM) or mlp
        rng = np.random.default_rng(int(mcfg.seed) if noise[name] else 0)
        logit = 2.0 * (c.y - 0.5) + noise[name] * rng.normal(size=len(c.y)) + rng.normal(size=len(c.y))
        p = 1 / (1 + np.exp(-logit))
        model_id = f"{name}-s{mcfg.seed}-{zlib.crc32(str(mcfg.model.head.get('estimator')).encode()):08x}"
        folder = prep.out_dir / "models" / model_id
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({c.id_col: c.train[c.id_col], "no": 1 - p, "yes": p}).to_csv(folder / "oof.csv", index=False)
        return {"model_id": model_id, "cv_score": float(c.metric(c.y, np.c_[1 - p, p]))}

    return fit_


class Clock:
    """The zoo's clock, moved on by the fake training only: seconds a member 'takes' are exact."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed(fit_, clock: Clock, seconds: dict[str, float]):
    """fit_, taking `seconds[head type]` of the clock's time."""

    def fit_timed(mcfg, prep):
        clock.now += seconds[mcfg.model.head.type]
        return fit_(mcfg, prep)

    return fit_timed


@pytest.mark.slow
def test_extra_seeds_stop_once_they_add_nothing(make_comp, tmp_path, monkeypatch):
    """fill buys more seeds of a family only while its last seed improved the family's average by more than one
    standard error over the folds: copies of one model get none, independent noisy seeds get them."""
    monkeypatch.setattr("pipeline.zoo.run.MAX_SEED", 4)
    comp = make_comp(n_train=600, n_test=12)
    out = tmp_path / "stop"
    overrides = [o for o in overrides_for(comp, out, f"zoo.skip=[catboost,xgb,native,{OTHERS}]") if "text_col" not in o]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        members = train_zoo(cfg, prepare(cfg), overrides, fake_fit({"sklearn": 3.0, "mlp": 0.0}))
    extra = sorted(" ".join(m.overrides) for m in members if m.tier == 4)
    assert extra == ["model=tabular_lgbm seed=3", "model=tabular_lgbm seed=4"]
    stopped = json.loads((out / "zoo.json").read_text())["seeds_stopped"]
    assert list(stopped) == ["model=tabular"] and stopped["model=tabular"]["gain"] == 0


@pytest.mark.slow
def test_a_shared_embedding_pass_counts_until_a_member_has_paid_for_it(make_comp, tmp_path):
    """The frozen heads share one embedding pass: while none of them has trained, each is estimated with it, so a
    budget too small for the pass skips them all (the MLP head alone looked cheap and overran a 33 s budget by
    48 s on rotten); once one has trained, the others cost their head only."""
    comp = make_comp(n_train=600, n_test=12, text=True)
    runs = {}
    # minutes. Estimates at 600 rows: TF-IDF 0.9 s, the pass 3 s, a head 0.6 s. 3.3 s holds TF-IDF (with 2.4 s of
    # slack on a loaded machine: 1.8 s skipped it there) and a head alone, never the pass and a head (3.6 s)
    for budget in (0.055, 0.2):
        out = tmp_path / f"b{budget}"
        skip = "zoo.skip=[text_finetune,text_mpnet,catboost,xgb,native,'model=tabular',lgbm]"
        overrides = [*overrides_for(comp, out, skip), f"zoo.budget_minutes={budget}", "data.feature_cols=[]"]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
            # a clock that stands still: the estimates alone decide (a member that took no time corrects none)
            members = train_zoo(cfg, prepare(cfg), overrides, fake_fit({"sklearn": 1.0, "mlp": 1.0}), Clock())
        runs[budget] = {m.why.split(" ")[0]: m.status for m in members if "seed 2" not in m.why}
    assert runs[0.055] == {"TF-IDF": "trained", "linear": "skipped", "MLP": "skipped", "a": "skipped"}
    assert set(runs[0.2].values()) == {"trained"}


def test_a_misestimated_member_corrects_the_estimates_of_its_kind(make_comp, tmp_path):
    """The MLP takes 3x its estimate: the next MLP is expected at 3x (and skipped where that overruns the budget,
    though the planner's figure would fit); a kind not trained yet gets the run's median ratio."""
    comp = make_comp(n_train=60, n_test=12)
    out = tmp_path / "ratio"
    overrides = [o for o in overrides_for(comp, out, "zoo.budget_minutes=1") if "text_col" not in o]
    clock = Clock()
    fit_ = timed(fake_fit({"sklearn": 1.0, "mlp": 1.0}), clock, {"mlp": 30.0, "sklearn": 10.0})
    members = [
        Member(["model=tabular", "seed=0"], "MLP", 10.0),  # takes 30 s: x3
        Member(["model=tabular_lgbm", "seed=0"], "LightGBM", 10.0),  # takes 10 s: x1
        Member(["model=tabular", "model.head.hidden=[16]", "seed=0"], "another MLP", 10.0),
        Member(["model=tabular_xgb", "seed=0"], "XGBoost", 10.0),
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        zoo = Zoo(cfg, prepare(cfg), overrides, fit_, clock)
        zoo.members += members
        for m in members:
            zoo.run(m)
    mlp, lgbm, mlp2, xgb = json.loads((out / "zoo.json").read_text())["members"]
    assert (mlp["cost"], mlp["estimate"], mlp["seconds"]) == (10.0, 10.0, 30.0)
    assert (lgbm["ratio"], lgbm["estimate"], lgbm["status"]) == (3.0, 30.0, "trained")  # the run's median so far
    assert (mlp2["ratio"], mlp2["estimate"], mlp2["status"]) == (3.0, 30.0, "skipped")  # 40 s + 30 s > 60 s
    assert "~30 s needed" in mlp2["note"]
    assert (xgb["ratio"], xgb["estimate"], xgb["status"]) == (2.0, 20.0, "trained")  # median of x3 and x1


@pytest.mark.parametrize(
    "trials, budget, reason, search",
    [
        (20, 0.5, "budget", "budget: Optuna trial 9/20"),  # 5 s of plan + 8 trials of 3 s: the 9th would overrun
        (2, 15, "plan exhausted", "2 trials of model=tabular_lgbm"),
    ],
)
@pytest.mark.slow
def test_search_trials_are_members_and_the_zoo_says_why_it_stopped(
    make_comp, tmp_path, monkeypatch, trials, budget, reason, search
):
    monkeypatch.setattr("pipeline.zoo.run.MAX_SEED", 0)  # no extra seeds after the search: its members alone
    comp = make_comp(n_train=600, n_test=12)  # LightGBM estimated at 1.2 s, the MLP 1.8 s: x2.5 and x1.1
    out = tmp_path / "search"
    skip = f"zoo.skip=[catboost,xgb,native,'seed=1','seed=2',{OTHERS}]"  # the plan: LightGBM and the MLP, one seed each
    overrides = overrides_for(comp, out, skip, f"zoo.budget_minutes={budget}", trials=trials)
    overrides = [o for o in overrides if "text_col" not in o]
    clock = Clock()
    fit_ = timed(fake_fit({"sklearn": 1.0, "mlp": 1.0}), clock, {"mlp": 2.0, "sklearn": 3.0})
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        members = train_zoo(cfg, prepare(cfg), overrides, fit_, clock)
    doc = json.loads((out / "zoo.json").read_text())
    tried = [m for m in doc["members"] if m["tier"] == 3]
    assert len(tried) == doc["search"]["trials"] == (8 if reason == "budget" else trials)
    assert all(m["why"].startswith("Optuna trial") and m["status"] == "trained" for m in tried)
    assert all("model=tabular_lgbm" in m["overrides"] for m in tried)
    assert len({m["model_id"] for m in tried}) == len(tried)  # each trial its own model folder
    assert all((out / "models" / m["model_id"] / "oof.csv").is_file() for m in tried)
    assert doc["search"]["best"]["model_id"] in {m["model_id"] for m in doc["members"]}
    assert len(members) == len(doc["members"]) == 2 + len(tried)
    stopped = doc["stopped"]
    assert stopped["reason"] == reason and search in stopped["detail"]
    assert stopped["budget_used"] == round(clock.now / (budget * 60), 3)


def test_a_member_skipped_on_a_pessimistic_estimate_gets_a_second_chance(make_comp, tmp_path):
    """The first member took 3x its estimate, so LightGBM (a kind not trained yet) looked 3x dearer and was
    skipped; once a cheap XGBoost has brought the run's median ratio down, the plan's second pass trains it."""
    comp = make_comp(n_train=60, n_test=12)
    out = tmp_path / "again"
    overrides = [o for o in overrides_for(comp, out, "zoo.budget_minutes=1") if "text_col" not in o]
    clock, base = Clock(), fake_fit({"sklearn": 1.0, "mlp": 1.0})
    took = {"mlp": 30.0, "lightgbm": 20.0, "xgboost": 2.0}

    def fit_(mcfg, prep):
        head = mcfg.model.head
        clock.now += took["mlp" if head.type == "mlp" else str(head.estimator._target_).split(".")[0]]
        return base(mcfg, prep)

    members = [
        Member(["model=tabular", "seed=0"], "MLP", 10.0),  # takes 30 s: x3
        Member(["model=tabular_lgbm", "seed=0"], "LightGBM", 15.0),  # x3: 45 s, 30 + 45 > 60: skipped
        Member(["model=tabular_xgb", "seed=0"], "XGBoost", 5.0),  # x3: 15 s fits; takes 2 s: x0.4
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        zoo = Zoo(cfg, prepare(cfg), overrides, fit_, clock)
        zoo.members += members
        zoo.run_plan(members)
    mlp, lgbm, xgb = json.loads((out / "zoo.json").read_text())["members"]
    assert (mlp["status"], xgb["status"], lgbm["status"]) == ("trained", "trained", "trained")
    assert (lgbm["ratio"], lgbm["estimate"], lgbm["note"]) == (1.7, 25.5, "")  # median of x3 and x0.4: 32 + 25.5 s
    assert clock.now == 52.0


def test_families_of_one_seed_get_seeds_when_none_varies(make_comp, tmp_path, monkeypatch):
    """A mixed plan trains one seed of each member: the budget left buys seeds of the two best families, each
    stopping once its last seed adds no more than its noise (the MLP: copies)."""
    monkeypatch.setattr("pipeline.zoo.run.MAX_SEED", 3)
    comp = make_comp(n_train=600, n_test=12)
    out = tmp_path / "one"
    overrides = [o for o in overrides_for(comp, out) if "text_col" not in o]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        zoo = Zoo(cfg, prepare(cfg), overrides, fake_fit({"sklearn": 3.0, "mlp": 0.0}))
        zoo.members += [
            Member(["model=tabular_lgbm", "seed=0"], "LightGBM", 1.0),
            Member(["model=tabular", "seed=0"], "MLP", 1.0),
        ]
        zoo.run_plan(zoo.members)
        fill(zoo)
    extra = sorted(" ".join(m.overrides) for m in zoo.members if m.tier == 4)
    assert extra == ["model=tabular seed=1", *(f"model=tabular_lgbm seed={s}" for s in (1, 2, 3))]
    assert list(zoo.doc["seeds_stopped"]) == ["model=tabular"]


@pytest.mark.slow  # composes every model preset
def test_sklearn_presets_are_those_with_an_sklearn_head() -> None:
    """Several targets multiply the planned cost of the presets that fit one model per target (plan.py)."""
    from conftest import CONF_DIR, build_cfg

    from pipeline.zoo.plan import SKLEARN_PRESETS

    presets = [p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "auto"]
    sklearn = {p for p in presets if build_cfg(f"model={p}").model.head.type == "sklearn"}
    assert sklearn == SKLEARN_PRESETS
