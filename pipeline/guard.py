"""What a run may leave under outputs/: nothing after a user error, and no temporary files of killed runs.

- `watch(out_dir)` (the data stage, before its first write) notes what the competition's folder holds; after a
  user error `undo()` removes what this run added there (its lock file included), except complete models, and
  the Hydra run folder of this job. The first part only in a single process (run mode or Hydra's basic
  launcher): parallel jobs share the folder, and one job's error must not delete another's work.
- `clean_temp_files(out_dir)` removes the `.<name>.<random>.tmp` files that `artifacts.atomic_write` leaves when
  a run is killed mid-write. Every run holds a shared lock on `out_dir/.lock` while it lives; the cleanup runs
  only under the exclusive lock, that is when no other run of this competition is alive to own a temp file.
"""

import fcntl
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
LOCK = ".lock"
_locks: dict[Path, int] = {}  # out_dir -> the descriptor whose shared lock this process holds until it exits
_watched: list[tuple[Path, set[Path]]] = []


def _entries(out_dir: Path) -> set[Path]:
    """The competition folder's entries two levels deep (models/<id>, cache/<file>, runs/<time>, folds.csv)."""
    if not out_dir.is_dir():
        return set()
    top = set(out_dir.iterdir())
    return top | {p for d in top if d.is_dir() for p in d.iterdir()}


def begin() -> None:
    """A new run (or an in-process call): forget what earlier ones watched."""
    _watched.clear()


def watch(out_dir: Path) -> None:
    """Note what `out_dir` holds before this run writes there (see `undo`)."""
    _watched.append((Path(out_dir), _entries(Path(out_dir))))


def _single_process() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return True
    hc = HydraConfig.get()
    return hc.mode == RunMode.RUN or hc.launcher._target_.endswith("BasicLauncher")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prune_empty(folder: Path, parents: int) -> None:
    """Remove `folder` and up to `parents` of its parents while they are empty, then an empty `outputs` above them
    (a fresh clone's first run): never a folder the user made for something else."""
    folder = folder.resolve()
    for _ in range(parents + 1):
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
        folder = folder.parent
    if folder.name == "outputs" and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def undo() -> None:
    """After a user error: remove what this run added to the watched folders, and this job's Hydra folder."""
    if _single_process():
        for out_dir, before in _watched:
            for p in sorted(_entries(out_dir) - before, reverse=True):
                complete_model = p.parent.name == "models" and (p / "metrics.json").is_file()
                if not complete_model:
                    _remove(p)
            _prune_empty(out_dir, 0)
    _watched.clear()
    _forget_hydra_folder()


def _forget_hydra_folder() -> None:
    """Remove the folder Hydra made for this job (its config copy and log) and the sweep folder, if now empty."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or not HydraConfig.get().runtime.output_dir:
        return
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    if hc.output_subdir:
        shutil.rmtree(job_dir / hc.output_subdir, ignore_errors=True)
    (job_dir / f"{hc.job.name}.log").unlink(missing_ok=True)
    if hc.mode != RunMode.MULTIRUN:
        _prune_empty(job_dir, 2)  # <out_dir>/runs/<time>
        return
    sweep = Path(hc.sweep.dir)
    _prune_empty(job_dir, 0)
    if sweep.is_dir() and [p.name for p in sweep.iterdir()] == ["multirun.yaml"]:
        (sweep / "multirun.yaml").unlink()  # written by the launcher before the first job: no job ran
        _prune_empty(sweep, 2)  # <out_dir>/multirun/<time>


def clean_temp_files(out_dir: Path) -> None:
    """Hold the shared lock of `out_dir` for this process; first remove killed runs' temp files if no run is alive."""
    out_dir = Path(out_dir)
    if out_dir in _locks:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.debug("another run uses %s: leaving temp files alone", out_dir)
    else:
        stale = [p for p in out_dir.rglob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            log.info("removed %d temporary file(s) left by a killed run under %s", len(stale), out_dir)
    fcntl.flock(fd, fcntl.LOCK_SH)  # released by the kernel when this process ends, killed or not
    _locks[out_dir] = fd
