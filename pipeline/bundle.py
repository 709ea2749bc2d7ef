"""Entry point: `outputs/<name>/bundle/`, one folder to attach to an offline notebook (a code competition).

python -m pipeline.bundle data=adult            # make bundle ARGS="data=adult"

It holds the project's wheel (configs inside), the competition's outputs that prediction reads (competition.json,
ensemble.skops and the member folders the ensemble uses, without their training logs), the weights files those
members load (copied in, so no package or hub is needed; a finetuned image member's fold models hold all of its
weights), the ONNX exports that frozen members embed with, and a README with the commands.
"""

import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.choices import TRAINS_BACKBONE, ModelKind, is_frozen
from pipeline.cli import cli
from pipeline.errors import UserError, user_errors

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]  # the project: pyproject.toml
NOT_IN_WHEELHOUSE = ("torch", "torchvision")  # a notebook image has its own working pair: never replace it


def weights_source(cfg: DictConfig) -> tuple[str, str] | None:
    """(config key, value) of the local weights file or folder a member loads; None for hub or random weights, and
    for a finetuned image member: its fold models hold every weight (predict builds the network without the
    pretrained file, `predictor.finetuned_backbone`)."""
    from pipeline.models.backbones import is_local

    if cfg.model.kind == ModelKind.IMAGE:
        value = cfg.model.backbone.get("weights")
        return ("model.backbone.weights", value) if value and value != "hub" and not finetuned_image(cfg) else None
    if cfg.model.kind == ModelKind.TEXT:
        value = cfg.model.backbone.name
        if not is_local(value):
            log.warning("%s loads '%s' from the hub: the notebook needs internet or the HF cache", cfg.name, value)
            return None
        return "model.backbone.name", value
    return None


def finetuned_image(cfg: DictConfig) -> bool:
    return cfg.model.kind == ModelKind.IMAGE and cfg.model.get("finetune") in TRAINS_BACKBONE


def copy_member(src: Path, dest: Path, weights: dict[str, str]) -> None:
    """The files prediction reads: config.yaml (weights paths made bundle-relative), metrics.json, fold models (and
    a refit model)."""
    from pipeline.artifacts import ModelFolder
    from pipeline.models.weights import resolve_path

    cfg = OmegaConf.load(src / "config.yaml")
    source = weights_source(cfg)
    if finetuned_image(cfg):
        OmegaConf.update(cfg, "model.backbone.weights", None)  # not read: the fold models hold every weight
    if source:
        key, value = source
        path = resolve_path(value)
        if str(path) not in weights:
            weights[str(path)] = f"weights/{len(weights)}-{path.name}"
        OmegaConf.update(cfg, key, weights[str(path)])  # relative: found under the outputs folder (predictor.py)
    (dest / "folds").mkdir(parents=True)
    OmegaConf.save(cfg, dest / "config.yaml")
    shutil.copy2(src / "metrics.json", dest / "metrics.json")
    for f in ModelFolder(src).model_files():
        shutil.copy2(f, dest / "folds" / f.name)


def encoder_files(folder) -> set[str]:
    """The ONNX exports a member's fold models embed with and their tokenizers (`state["encoder"]`,
    `state["tokenizer"]`), relative to the outputs folder; only frozen members have them."""
    if not is_frozen(folder.read_config().model):
        return set()
    states = [folder.read_fold_model(k)[0] for k in folder.fold_ids()]
    return {state[key] for state in states for key in ("encoder", "tokenizer") if state.get(key)}


def build_wheel(dest: Path) -> Path:
    """The project as a wheel (built from a copy, so no build/ folder lands in the checkout)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(
            ROOT / "pipeline", src / "pipeline", symlinks=False, ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy2(ROOT / "pyproject.toml", src / "pyproject.toml")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dest),
            str(src),
        ]
        subprocess.run(cmd, check=True)
    return next(dest.glob("pipeline-*.whl"))


def wheelhouse(dest: Path) -> None:
    """Every dependency's wheel but torch/torchvision, from the package index (`bundle.wheelhouse=true`)."""
    reqs = [r.split(";")[0].strip() for r in metadata.requires("pipeline") or [] if "extra ==" not in r]
    reqs = [r for r in reqs if re.split(r"[<>=!~ \[]", r)[0].lower() not in NOT_IN_WHEELHOUSE]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dest), *reqs], check=True)


README = """# {name}: offline prediction bundle

Members: {members}. Chosen ensemble: {chosen}.

On the notebook (no internet), with this folder attached at BUNDLE:
```bash
pip install --no-index --find-links BUNDLE/wheels pipeline
pipeline-predict name={name} paths.output_dir=BUNDLE/outputs/{name} \\
    predict.test_csv=<the test file> predict.output=submission.csv{image_dir}
```
The notebook's own torch and torchvision are used (the wheel needs torch {torch}, or a compatible release).{metric}
"""


@hydra.main(config_path="conf", config_name="bundle", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # the stage's code loads only when work starts: `--help` answers at once
    from pipeline.artifacts import COMPETITION, MODELS, CompetitionInfo, model_folder
    from pipeline.ensembling.saved import ENSEMBLE_FILE, load_ensemble, needed_members

    with user_errors():
        out_dir, dest = Path(cfg.paths.output_dir), Path(cfg.bundle.dir)
        saved = load_ensemble(out_dir)
        info = CompetitionInfo.read(out_dir / COMPETITION)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        comp = tmp / "outputs" / cfg.name
        weights: dict[str, str] = {}
        encoders: set[str] = set()
        members = needed_members(saved)  # a weighted ensemble's zero-weight members stay home
        for name in members:
            folder = model_folder(out_dir, name)
            if not folder.fold_ids():
                raise UserError(f"{folder.path} has no saved fold models (trained by an older version): retrain it")
            copy_member(folder.path, comp / MODELS / name, weights)
            encoders |= encoder_files(folder)
        for src, rel in weights.items():
            (comp / rel).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, comp / rel)
        for rel in sorted(encoders):  # the embeddings' engine: predict computes the numbers training did with it
            if not (out_dir / rel).is_file():
                log.warning("%s not found: predict will make it again (export or transformers)", out_dir / rel)
                continue
            (comp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out_dir / rel, comp / rel)
        if info.sample_submission and Path(info.sample_submission).is_file():  # the format to follow
            shutil.copy2(info.sample_submission, comp / "sample_submission.csv")
            info = replace(info, sample_submission="sample_submission.csv")  # found under the outputs folder
        info.write(comp / COMPETITION)
        shutil.copy2(out_dir / ENSEMBLE_FILE, comp / ENSEMBLE_FILE)
        build_wheel(tmp / "wheels")
        if cfg.bundle.wheelhouse:
            wheelhouse(tmp / "wheels")
        image_dir = " \\\n    predict.image_dir=<the test images' folder>" if info.image_col else ""
        (tmp / "README.md").write_text(
            README.format(
                name=cfg.name,
                members=len(members),
                chosen=saved["name"],
                image_dir=image_dir,
                torch=metadata.version("torch"),
                metric=f"\nThe custom metric's module must import there too: {info.metric['_target_']}"
                if isinstance(info.metric, dict)
                else "",
            )
        )
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 1e6
        print(f"bundle ({len(members)} members, {len(weights)} weights, {size:.0f} MB): {dest}")


def run() -> None:
    """`pipeline-bundle`: the command line checked before Hydra creates its run folder."""
    cli(main, "bundle")


if __name__ == "__main__":
    run()
