"""The zoo: `experiment=auto` trains a planned zoo within a time budget (zoo.json records it), and the member
table printed after every run lists each trained member of a competition with its CV score."""

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipeline.artifacts import model_folder, model_folders, write_json
from pipeline.choices import TargetTransform, Task, ZooTransform
from pipeline.data.contract import load_competition
from pipeline.data.tabular import skewed_positive
from pipeline.prepare import Prepared
from pipeline.zoo.plan import COST, Member, plan
from pipeline.zoo.tune import tune

log = logging.getLogger(__name__)


def member_table(out_dir: Path) -> pd.DataFrame:
    """One row per complete model under out_dir (best CV first)."""
    rows = []
    for f in model_folders(out_dir):
        m = f.read_metrics()
        rows.append(
            {
                "model_id": m["model_id"],
                m["metric"]: m["cv_score"],
                "fold_mean": m["cv_mean"],
                "fold_std": m["cv_std"],
                "epochs": sum(m["epochs"]),
                "seconds": round(m["seconds"], 1),
                "_asc": not m.get("greater_is_better", True),
            }
        )
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    metric = df.columns[1]
    df = df.sort_values(metric, ascending=bool(df["_asc"].iloc[0])).drop(columns="_asc")
    return df.reset_index(drop=True)


class MemberTable(Callback):
    """Hydra callback: print the member table after a single run and after a whole multirun."""

    def _print(self, config: DictConfig) -> None:
        try:
            out_dir = Path(config.paths.output_dir)
        except Exception:  # the config may not resolve (e.g. a run that failed on its input)
            return
        table = member_table(out_dir)
        if not table.empty:
            print(f"\nmembers of {out_dir} ({len(table)}):\n{table.to_string(float_format=lambda v: f'{v:.5f}')}")

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        self._print(config)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._print(config)


# -- experiment=auto: plan the zoo, train it within the budget, record it in zoo.json ----------------------
def compose_member(overrides: list[str], member: Member) -> DictConfig:
    """The user's command line with the member's overrides; the member's win where both set a key."""
    keys = {_key(o) for o in member.overrides}
    kept = [o for o in overrides if _key(o) not in keys]
    return hydra.compose("train", overrides=[*kept, *member.overrides])


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _family(m: Member) -> tuple[str, ...]:
    return tuple(o for o in m.overrides if not o.startswith("seed="))


# Taken / estimated seconds, kept within 0.1-20x: a loaded machine really is several times slower than the
# planner's table (the next members take as long), but beyond 20x a ratio says more of a one-off than of a rate.
RATIO_RANGE = (0.1, 20.0)


def _kind(m: Member) -> str:
    """The member's model preset, with its finetune mode and its head's estimator class where it sets them: frozen
    heads and finetunes of one backbone differ ~45x in cost (COST), LightGBM and a linear model on the same
    embeddings ~20x, and a misestimate of one says little about the other."""
    model = next((o.split("=", 1)[1] for o in m.overrides if _key(o) == "model"), "default")
    finetune = next((o.split("=", 1)[1] for o in m.overrides if _key(o) == "model.finetune"), None)
    head = next((o for o in m.overrides if _key(o) == "model.head.estimator"), "")
    head = re.search(r"_target_:\s*([\w.]+)", head)
    kind = f"{model}/{finetune}" if finetune else model
    return f"{kind}/{head.group(1).rsplit('.', 1)[-1]}" if head else kind


class Zoo:
    """Trains planned members one after another while the time budget lasts; zoo.json follows every step.

    Each member's estimate is corrected by what this run's members took against theirs (`expect`), so a member
    the planner misestimated 3x makes the next ones of its kind estimated right before they are decided."""

    def __init__(
        self, cfg: DictConfig, prep: Prepared, overrides: list[str], fit: Callable, clock: Callable = time.time
    ):
        import torch  # here, not at the top: Hydra imports this module for its callback before a command line's
        # data is checked, and a refused one should not wait for torch

        self.cfg, self.prep, self.overrides, self.fit, self.clock = cfg, prep, overrides, fit, clock
        self.start, self.budget = clock(), float(cfg.zoo.budget_minutes) * 60
        self.members: list[Member] = []
        self.doc = {
            "budget_minutes": cfg.zoo.budget_minutes,
            "gpu": torch.cuda.is_available(),
            "task": prep.comp.task,
            "rows": len(prep.comp.train),
            "views": {
                "tabular": len(prep.comp.feature_cols),
                "text": prep.comp.text_col,
                "image": prep.comp.image_col,
            },
            "target_transform": None,
        }

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def compose(self, m: Member) -> DictConfig:
        return compose_member(self.overrides, m)

    def cost(self, m: Member) -> float:
        """A member's estimated seconds, with the pass it shares with others (frozen features) until one of them
        has trained."""
        trained = {x.shared[0] for x in self.members if x.shared and x.status == "trained"}
        return m.cost + (m.shared[1] if m.shared and m.shared[0] not in trained else 0.0)

    def ratio(self, m: Member) -> tuple[float, str]:
        """Seconds taken per second estimated by the trained members most like m: its family (the same overrides
        but the seed), else its kind (`_kind`), else the run's median; 1 before any has trained."""
        done = [x for x in self.members if x.status == "trained" and x.seconds and x.estimate and x.ratio]
        for like, name in ((_family, "family"), (_kind, "kind")):
            same = [x for x in done if like(x) == like(m)]
            if same:
                r = sum(x.seconds for x in same) / sum(x.estimate / x.ratio for x in same)
                return float(np.clip(r, *RATIO_RANGE)), f"{len(same)} of its {name}"
        if done:
            r = np.median([x.seconds / (x.estimate / x.ratio) for x in done])
            return float(np.clip(r, *RATIO_RANGE)), f"median of {len(done)} members"
        return 1.0, "planner's"

    def expect(self, m: Member) -> str:
        """Set m's corrected estimate (and its ratio); say where the correction came from."""
        r, source = self.ratio(m)
        m.ratio, m.estimate = round(r, 3), round(r * self.cost(m), 2)
        return source

    def overrun(self, m: Member) -> str | None:
        """Why m would overrun the budget at its corrected estimate (None: it fits)."""
        source = self.expect(m)
        if self.elapsed + m.estimate <= self.budget:
            return None
        left = max(0.0, self.budget - self.elapsed)
        return f"~{m.estimate:.0f} s needed (x{m.ratio:.2f}: {source}), {left:.0f} s left"

    def run(self, m: Member) -> Member:
        """Train one member (or find it complete); a member that fails is recorded and the zoo goes on."""
        if m not in self.members:
            self.members.append(m)
        if self.members.index(m) == 0:
            self.expect(m)  # the first member trains whatever its estimate: a zoo of none helps nobody
        elif over := self.overrun(m):
            m.status, m.note = "skipped", f"over the budget: {over}"
            log.info("zoo: skipping %s (%s)", " ".join(m.overrides), m.note)
            return self.save(m)
        log.info(
            "zoo: member %d/%d (~%.0f s, x%.2f): %s  [%s]",
            self.members.index(m) + 1,
            len(self.members),
            m.estimate,
            m.ratio,
            m.why,
            " ".join(m.overrides),
        )
        t, m.note = self.clock(), ""
        try:
            mcfg = self.compose(m)
            prep = self.prep if mcfg.data == self.cfg.data else replace(self.prep, comp=load_competition(mcfg.data))
            metrics = self.fit(mcfg, prep)
            m.status, m.model_id, m.cv_score = "trained", metrics["model_id"], metrics["cv_score"]
        except Exception as e:  # one member's failure (a missing library, a bad override) must not sink the zoo
            m.status, m.note = "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.error("zoo: member failed (%s): %s", " ".join(m.overrides), m.note)
            metrics = {}
        m.seconds = round(self.clock() - t, 1)
        if metrics.get("seconds", 0) > m.seconds:  # found complete: what it took to train is its true cost
            m.seconds, m.note = round(metrics["seconds"], 1), "found complete (seconds: its training then)"
        for x in self.members:  # those still to run: estimates corrected by what this one took
            if x.status == "planned":
                self.expect(x)
        return self.save(m)

    def run_plan(self, planned: list[Member]) -> None:
        """Each planned member in turn, then once more those skipped that fit at the estimates corrected since: a
        first member that took 3x its estimate makes every kind not trained yet look 3x dearer until cheaper ones
        have trained."""
        for m in planned:
            self.run(m)
        for m in [m for m in planned if m.status == "skipped"]:
            if not self.overrun(m):
                self.run(m)

    def stop(self, search: str, seeds: str) -> dict:
        """Why the zoo ended, in zoo.json: `budget` when the next trial or seed would have overrun it, else `plan
        exhausted` (the search ran its trials, extra seeds stopped adding more than their noise); `search` and
        `seeds` say how each ended."""
        cut = search.startswith("budget") or seeds.startswith("budget")
        reason, detail = "budget" if cut else "plan exhausted", f"search: {search}; seeds: {seeds}"
        skipped = sum(m.status == "skipped" for m in self.members)
        detail += f"; {skipped} planned members skipped for the budget" if skipped else ""
        self.doc["stopped"] = {"reason": reason, "detail": detail, "budget_used": round(self.elapsed / self.budget, 3)}
        self.save()
        return self.doc["stopped"]

    def save(self, m: Member | None = None) -> Member | None:
        members = [x.as_dict() for x in self.members]
        doc = self.doc | {"seconds": round(self.elapsed, 1), "members": members}
        write_json(doc, self.prep.out_dir / "zoo.json")
        return m


def choose_transform(zoo: Zoo) -> list[str]:
    """On a skewed, non-negative regression target, LightGBM on the raw and the log1p target: CV picks."""
    comp = zoo.prep.comp
    if zoo.cfg.zoo.target_transform != ZooTransform.AUTO or comp.task != Task.REGRESSION or not comp.feature_cols:
        return []
    if not skewed_positive(comp.y):
        return []
    cost = len(comp.train) / 1000 * COST["gbm"]
    raw = zoo.run(Member(["model=tabular_lgbm", "seed=0"], "LightGBM on the raw target (transform pilot)", cost))
    logged = zoo.run(
        Member(
            ["model=tabular_lgbm", "seed=0", "model.target_transform=log1p"],
            "LightGBM on log1p(target) (transform pilot)",
            cost,
        )
    )
    if raw.cv_score is None or logged.cv_score is None:
        return []
    better = comp.metric.better(logged.cv_score, raw.cv_score)
    zoo.doc["target_transform"] = TargetTransform.LOG1P if better else TargetTransform.NONE
    log.info(
        "zoo: target transform %s (CV %.5f with log1p vs %.5f raw)",
        zoo.doc["target_transform"],
        logged.cv_score,
        raw.cv_score,
    )
    return ["model.target_transform=log1p"] if better else []


MAX_SEED = 9  # extra seeds stop here, whatever the budget: past ~10 bagged copies an average barely moves


def family_gain(zoo: Zoo, seeds: list[Member]) -> tuple[float, float]:
    """What the last of a family's seeds added: the per-fold score of the average of all their out-of-fold
    predictions minus that of the average without the last one (positive: better), as a mean over the folds and
    its standard error (paired by fold, as the ensemble compares a combination with the best member)."""
    comp, folds = zoo.prep.comp, zoo.prep.folds
    ids = comp.train[comp.id_col].astype(str).to_numpy()
    preds = []
    for m in seeds:
        oof = pd.read_csv(model_folder(zoo.prep.out_dir, m.model_id).oof, dtype={comp.id_col: str})
        values = oof.set_index(comp.id_col).loc[ids].to_numpy()
        preds.append(values[:, 0] if values.shape[1] == 1 else values)  # one column: a regression's values
    sign = 1 if comp.metric.greater_is_better else -1
    with_last, without = np.mean(preds, axis=0), np.mean(preds[:-1], axis=0)
    d = []
    for k in np.unique(folds[folds >= 0]):
        rows = folds == k
        d.append(sign * (comp.metric(comp.y[rows], with_last[rows]) - comp.metric(comp.y[rows], without[rows])))
    return float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.inf


def fill(zoo: Zoo, families: int = 2) -> str:
    """The budget left after the plan and the search buys more seeds of the best families (the same overrides but
    the seed): those that already vary by seed (two or more seeds trained) first, else the best by CV, while they
    fit. A family gets no more seeds once its last seed's gain to the family's average is within the noise (not
    above one standard error over the folds): more of the same would spend the budget for nothing. Returns how the
    seeds ended."""
    trained = [m for m in zoo.members if m.status == "trained" and m.cv_score is not None]
    sign = 1 if zoo.prep.comp.metric.greater_is_better else -1
    best: dict[tuple, Member] = {}
    for m in sorted(trained, key=lambda m: -sign * m.cv_score):
        best.setdefault(_family(m), m)
    varied = [f for f in best if sum(_family(m) == f for m in trained) >= 2]
    seeded = (varied + [f for f in best if f not in varied])[:families]  # then the best of one seed (a mixed plan)
    if not seeded:
        return "no family trained"
    used = {(_family(m), o) for m in zoo.members for o in m.overrides if o.startswith("seed=")}
    for seed in range(MAX_SEED + 1):
        for f in list(seeded):
            if (f, f"seed={seed}") in used:
                continue
            seeds = [m for m in zoo.members if _family(m) == f and m.status == "trained" and m.model_id]
            gain, se = family_gain(zoo, seeds) if len(seeds) > 1 else (np.inf, 0.0)
            if gain <= se:
                log.info("zoo: no more seeds of %s: the last one added %.5g +- %.5g per fold", " ".join(f), gain, se)
                zoo.doc.setdefault("seeds_stopped", {})[" ".join(f)] = {"gain": gain, "se": se, "seeds": len(seeds)}
                seeded.remove(f)
                zoo.save()
                continue
            why = best[f].why.split(" (seed")[0]
            m = Member([*f, f"seed={seed}"], f"{why} (seed {seed}: budget left)", best[f].cost, 4, best[f].shared)
            if over := zoo.overrun(m):
                return f"budget: {m.why}: {over}"
            zoo.run(m)
    return "each family's last seed added no more than its noise" if not seeded else f"up to seed {MAX_SEED}"


def train_zoo(
    cfg: DictConfig, prep: Prepared, overrides: list[str], fit: Callable, clock: Callable = time.time
) -> list[Member]:
    """Plan the zoo from the competition's views, rows and task, then train it member by member within budget:
    the plan (`run_plan`), an Optuna search of the best gradient-boosting family (`tune`), then more seeds
    (`fill`)."""
    zoo = Zoo(cfg, prep, overrides, fit, clock)
    tt = choose_transform(zoo)
    backbone = compose_member(overrides, Member(["model=image"], "", 0)).model.backbone.name
    done = {tuple(m.overrides) for m in zoo.members}
    skip = list(cfg.zoo.skip)
    planned = [
        m
        for m in plan(prep.comp, zoo.doc["gpu"], tt, backbone, zoo.budget, bool(cfg.data.get("hflip", True)))
        if tuple(m.overrides) not in done and not any(s in " ".join(m.overrides) for s in skip)
    ]
    log.info(
        "zoo plan (%d members, budget %.0f min, %s):\n%s",
        len(planned),
        zoo.budget / 60,
        "GPU" if zoo.doc["gpu"] else "CPU",
        "\n".join(
            f"  tier {m.tier}  ~{m.cost:5.0f} s  {m.why}"
            + (f" (+ {m.shared[0]}: ~{m.shared[1]:.0f} s, once)" if m.shared else "")
            for m in planned
        ),
    )
    zoo.members += planned
    zoo.run_plan(planned)
    searched = tune(zoo, int(cfg.zoo.search_trials))
    stopped = zoo.stop(searched, fill(zoo))
    trained = sum(m.status == "trained" for m in zoo.members)
    log.info(
        "zoo: %d members trained in %.0f s (%.0f %% of the budget); stopped: %s (%s); see %s",
        trained,
        zoo.elapsed,
        100 * stopped["budget_used"],
        stopped["reason"],
        stopped["detail"],
        prep.out_dir / "zoo.json",
    )
    return zoo.members
