"""Every file of every config group composes with its entry point and resolves (a typo fails here, not in a run)."""

import functools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import pipeline  # noqa: F401  (registers the `dirname`/`basename` resolvers the data configs use)

CONF = Path(__file__).resolve().parents[1] / "conf"


def entry_point(group: str) -> str:
    """`ensemble/classifier` belongs to conf/ensemble.yaml; every other group to conf/train.yaml."""
    return "ensemble" if group.startswith("ensemble/") else "train"


GROUP_FILES = sorted((path.parent.relative_to(CONF).as_posix(), path.stem) for path in CONF.glob("*/**/*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def hydra_conf():
    """One Hydra context for the module: compose is ~0.1 s a file, a new context as much again."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


@functools.cache
def default_choices(entry: str) -> frozenset[str]:
    """The groups in the entry point's defaults list (a group outside it is added with `+group=name`)."""
    return frozenset(compose(entry, return_hydra_config=True).hydra.runtime.choices)


def test_every_group_is_covered():
    groups = {group.split("/")[0] for group, _ in GROUP_FILES}
    assert groups >= {"advisor", "data", "ensemble", "experiment", "model", "monitors", "optimizer", "trainer"}


@pytest.mark.slow
@pytest.mark.parametrize(("group", "name"), GROUP_FILES, ids=[f"{g}={n}" for g, n in GROUP_FILES])
def test_every_config_file_composes(group: str, name: str, tmp_path: Path):
    """Data paths point into `tmp_path` (nothing is read); `data=csv` gets the two keys a user must give."""
    entry = entry_point(group)
    choice = f"{group}={name}" if group in default_choices(entry) else f"+{group}={name}"
    cfg = compose(entry, overrides=[choice, f"paths.data_dir={tmp_path}"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == name
    with open_dict(cfg):
        del cfg["hydra"]  # resolved by Hydra at run time (${now:}, the job's name)
        if OmegaConf.is_missing(cfg.data, "train_csv"):
            cfg.data.train_csv, cfg.data.target = str(tmp_path / "comp" / "train.csv"), "y"
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["data"]["name"] and Path(resolved["paths"]["output_dir"]).name == resolved["name"]
