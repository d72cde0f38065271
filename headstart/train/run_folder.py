"""A run's folder: created (moving aside the run it replaces), cleared of what a killed process left, and removed
again, with the replaced run put back, when a run stops before its first epoch ends."""

from __future__ import annotations

import shutil
from pathlib import Path

from headstart.errors import HeadstartError
from headstart.files import model_lock, remove_temporary, run_lock
from headstart.run import replaced_run
from headstart.train.processes import STOPPED


def remove_run(path: Path, ignore_errors: bool = False) -> None:
    """Delete a run folder if there is one, or only the link when it is a symbolic link to one (rmtree refuses
    links)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=ignore_errors)


def remove_leftovers(run_dir: Path) -> None:
    """Files and model copies that a kill -9 cut short in an earlier process of this run (we hold its lock), and the
    mark of an earlier attempt that stopped."""
    (run_dir / STOPPED).unlink(missing_ok=True)
    remove_temporary(run_dir)
    remove_temporary(run_dir / "checkpoints")
    for copy in run_dir.glob(".model-*"):  # save_model's staging folder, or the replaced model set aside
        remove_run(copy, ignore_errors=True)


def start_folder(run_dir: Path, resume: bool, overwrite: bool) -> tuple[bool, list[Path]]:
    """Create the run folder; return whether it replaces a run (--overwrite) and the folders above it that had to
    be created. The old run is moved aside: it is deleted only once the new run has finished, and put back if the
    new one stops before its first epoch ends."""
    replacing = run_dir.exists() and not resume
    if replacing:
        if not overwrite and (run_dir / "results.json").is_file():
            raise HeadstartError(f"Run folder {run_dir} already holds a finished run (its model: {run_dir / 'model'}; "
                                 f"`headstart evaluate {run_dir}` scores it again). Give the new run another name "
                                 "(--set name=...), or replace the old one with --overwrite (in Python: a config with "
                                 "another name, or overwrite=True).")
        if not overwrite:
            raise HeadstartError(f"Run folder {run_dir} already exists. Continue it with --resume {run_dir}, give "
                                 "the run another name (--set name=...), or replace it with --overwrite (in Python: "
                                 "resume=, a config with another name, or overwrite=True).")
        if not (run_dir / "config.yaml").is_file():
            raise HeadstartError(f"{run_dir} already exists and is not a headstart run (it has no config.yaml), so "
                                 "--overwrite leaves it alone: it replaces runs only. Give the run another name "
                                 "(--set name=...) or output folder (--set output=...).")
        # not a run that another process is training or evaluating, nor a model being compressed or pushed
        with run_lock(run_dir), model_lock(run_dir / "model"):
            if replaced_run(run_dir).exists() and not (run_dir / "results.json").exists():
                remove_run(run_dir)  # an unfinished replacement: the finished run set aside stays the one to keep
            else:
                remove_run(replaced_run(run_dir), ignore_errors=True)
                run_dir.rename(replaced_run(run_dir))
    created = [folder for folder in run_dir.parents if not folder.exists()]  # the deepest first
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return replacing, created


def undo_start(run_dir: Path, replacing: bool, created: list[Path]) -> bool:
    """After a failure: remove a run folder that has no finished epoch, so it does not block the next try, with the
    folders created for it, and put back the run it replaced. True if it was removed; a run with a checkpoint
    stays, for --resume."""
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        return False
    remove_run(run_dir, ignore_errors=True)  # while another error is on its way
    for folder in created:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if replacing:
        replaced_run(run_dir).rename(run_dir)
    return True
