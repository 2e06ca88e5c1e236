"""The run folder's record: opening it (fresh or resumed), the manifest a new run starts
with, the chain of runs its backbone came from, and the status a run ends with."""
from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from fmctl import __version__
from fmctl.checkpoint import RunFolder
from fmctl.config.schema import RunConfig
from fmctl.errors import RunFolderError


def open_run_folder(verb: str, run: RunConfig, raw_cfg: Any, run_dir: Path, checkpoint: Path | None, data: Any,
                    counts: dict[str, int], examples: dict[str, int], overrides: list[str] | None,
                    out: Any, customizations: list[dict[str, Any]] | None = None) -> RunFolder:
    """The run folder, locked: reopened to resume from `checkpoint`, else created with its
    config.yaml and a manifest saying what this run is."""
    if checkpoint is not None:
        from fmctl.runs.resume import warn_on_changes

        folder = RunFolder.reopen(run_dir)
        warn_on_changes(folder, raw_cfg, data, out)
        manifest = folder.update_manifest(status="running", resumed_from=str(checkpoint))
        folder.update_manifest(resumes=int(manifest.get("resumes", 0)) + 1)
        out.print(f"run folder: {folder.path} (resuming from {checkpoint.name})")
        return folder
    folder = RunFolder.create(run_dir, run.overwrite or run.trainer.resume == "auto")
    folder.write_config(raw_cfg)
    folder.update_manifest(
        status="running", fmctl_version=__version__, git_revision=git_revision(), verb=verb,
        recipe=run.recipe, run_dir=str(folder.path), task=run.task.name, backbone=run.backbone.name,
        pretrained=run.backbone.pretrained, lineage=lineage(run.backbone.pretrained),
        label_names=data.label_names, parameters=counts, customizations=customizations or [], data=data.sources,
        overrides=overrides or [], examples=examples, started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    out.print(f"run folder: {folder.path}")
    return folder


def open_on_main_rank(dist: Any, opener: Callable[[], RunFolder]) -> RunFolder | None:
    """Rank 0 opens the folder (the others get None); a failure there reaches every rank,
    which would otherwise wait for it forever."""
    from fmctl.loop import distributed

    if not dist.is_main:
        message = distributed.broadcast(dist, None)
        if message is not None:
            raise RunFolderError(f"rank 0 could not open the run folder: {message}")
        return None
    try:
        folder, failure = opener(), None
    except Exception as exc:
        folder, failure = None, exc
    distributed.broadcast(dist, None if failure is None else f"{failure}")
    if failure is not None:
        raise failure
    return folder


@contextlib.contextmanager
def recording_outcome(folder: RunFolder | None) -> Iterator[None]:
    """A run that stops early leaves its reason in the manifest (preempted, interrupted,
    failed) and its lock released, whatever stopped it."""
    try:
        yield
    except BaseException as exc:
        from fmctl.loop.fit import Preempted

        if folder is not None:
            status = ("preempted" if isinstance(exc, Preempted) else
                      "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            folder.update_manifest(status=status, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}")
        raise
    finally:
        if folder is not None:
            folder.unlock()


def lineage(pretrained: str | None) -> list[dict[str, Any]]:
    """The chain of fmctl runs a backbone came from (a pretrain run, then ...), newest first."""
    if not pretrained:
        return []
    path = Path(pretrained).expanduser()
    for candidate in (path / "manifest.json", path.parent / "manifest.json"):
        if candidate.is_file():
            parent = json.loads(candidate.read_text(encoding="utf-8"))
            entry = {k: parent.get(k) for k in ("run_dir", "verb", "recipe", "task", "backbone", "fmctl_version")}
            entry["metrics"] = parent.get("metrics", {})
            return [entry, *parent.get("lineage", [])]
    return []


def git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return found.stdout.strip() or None if found.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
