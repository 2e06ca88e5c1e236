"""The run folder: the hand-off between verbs, written so it is never half-valid.

Files are written under a temporary name and renamed into place; checkpoint folders
likewise. A new run never writes into a non-empty folder unless asked (overwrite=true).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from fmctl.errors import RunFolderError

LOCK_NAME = ".lock"
CHECKPOINT_FILES = ("model.safetensors or dcp/", "state.pt", "info.json")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_folder(tmp: Path, target: Path) -> None:
    """Put a finished folder in place of `target`: the old one (if any) is moved aside
    first and deleted last, so at every moment one complete version exists."""
    if target.exists():
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_file():
            with open(child, "rb+") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)


def checkpoint_complete(path: Path) -> bool:
    """Weights (model.safetensors, or a sharded dcp/ folder written under FSDP), the
    training state and info.json."""
    weights = (path / "model.safetensors").is_file() or (path / "dcp" / ".metadata").is_file()
    return weights and (path / "state.pt").is_file() and (path / "info.json").is_file()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoints/step_*; temporary (.step_*) folders of a save that
    was killed are never candidates."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    complete = [p for p in folder.glob("step_*") if p.is_dir() and checkpoint_complete(p)]
    return max(complete, key=lambda p: p.name) if complete else None


def check_run_dir_free(run_dir: Path, overwrite: bool) -> bool:
    """Whether run_dir holds files (True: overwrite=true lets a run replace them); refused
    with one line when it holds files and overwrite is off, or is not a folder at all."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run_dir: '{run_dir}' exists and is not a folder")
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    if occupied and not overwrite:
        raise RunFolderError(f"run_dir: '{run_dir}' already holds files; choose another run_dir= "
                             f"or pass overwrite=true to replace them")
    return occupied


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._locked = False
        self.save_pause = None  # a test hook: called mid-save (see fmctl.loop.faults)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> "RunFolder":
        path = Path(path)
        occupied = check_run_dir_free(path, overwrite)
        folder = cls(path)
        folder.probe_writable()
        folder.lock()  # before clearing: a folder another live run holds is refused, not emptied
        if occupied:
            for child in path.iterdir():
                if child.name != LOCK_NAME:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return folder

    @classmethod
    def reopen(cls, path: Path) -> "RunFolder":
        """An existing run folder, to resume training in it."""
        folder = cls(path)
        folder.probe_writable()
        folder.lock()
        return folder

    def probe_writable(self) -> None:
        """Fail before training, not after an hour of it, when the folder cannot be written
        (read-only file system, no space, a file in the way)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-probe"
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError as exc:
            raise RunFolderError(f"run_dir: cannot write to '{self.path}' ({exc.strerror or exc})") from None

    def lock(self) -> None:
        """Two runs writing one folder would interleave checkpoints and logs: the second
        is refused. A lock left by a dead process on this host is taken over."""
        lock = self.path / LOCK_NAME
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(lock)
                if holder.get("host") == record["host"] and not _pid_alive(holder.get("pid")):
                    lock.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                if "pid" not in holder:  # empty or unreadable: a process died between creating and writing it
                    if _age_seconds(lock) > _UNREADABLE_LOCK_GRACE_S:
                        lock.unlink(missing_ok=True)
                        continue
                    raise RunFolderError(f"run_dir: '{self.path}' has an empty or unreadable lock {lock}, written "
                                         f"less than {_UNREADABLE_LOCK_GRACE_S} s ago; if no run uses the folder, "
                                         f"delete it (it is taken over once older)") from None
                raise RunFolderError(f"run_dir: '{self.path}' is in use by pid {holder.get('pid')} on "
                                     f"{holder.get('host')} since {holder.get('since')}; if no run uses it, "
                                     f"delete {lock}") from None
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            self._locked = True
            return

    def unlock(self) -> None:
        if self._locked:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            self._locked = False

    def write_config(self, raw_cfg: Any) -> None:
        from omegaconf import OmegaConf

        from fmctl.paths import absolute_local_paths

        cfg = OmegaConf.create(absolute_local_paths(OmegaConf.to_container(raw_cfg, resolve=True)))
        cfg.run_dir = None  # re-running the saved config makes a fresh run folder
        cfg.overwrite = False
        atomic_write_text(self.path / "config.yaml", OmegaConf.to_yaml(cfg))

    def read_manifest(self) -> dict[str, Any]:
        path = self.path / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def update_manifest(self, **values: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(values)
        atomic_write_text(self.path / "manifest.json", json.dumps(manifest, indent=2, default=str))
        return manifest

    def save_checkpoint(self, name: str, model: Any, state: dict[str, Any] | None, info: dict[str, Any]) -> Path:
        """checkpoints/<name>/: model.safetensors (+ state.pt with the full training state)."""
        from safetensors.torch import save_model

        tmp = self.begin_checkpoint(name)
        try:
            save_model(_unwrap(model), str(tmp / "model.safetensors"))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.finish_checkpoint(tmp, name, state, info)

    def begin_checkpoint(self, name: str) -> Path:
        """A temporary folder for checkpoint `name`; weights go in before finish_checkpoint
        (by one process, or by every rank for a sharded checkpoint)."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.checkpoints_dir))

    def finish_checkpoint(self, tmp: Path, name: str, state: dict[str, Any] | None, info: dict[str, Any]) -> Path:
        import torch

        final = self.checkpoints_dir / name
        try:
            if self.save_pause:
                self.save_pause()
            if state is not None:
                torch.save(state, tmp / "state.pt")
            (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
            _fsync_tree(tmp)
            replace_folder(tmp, final)
            _fsync_dir(self.checkpoints_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def prune_checkpoints(self, keep_last: int) -> None:
        steps = sorted(p for p in self.checkpoints_dir.glob("step_*") if p.is_dir())
        for old in steps[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def load_weights(self, name: str, model: Any) -> None:
        from safetensors.torch import load_model

        load_model(_unwrap(model), str(self.checkpoints_dir / name / "model.safetensors"))


# A lock is created and then written; one still empty after this long was left by a crash.
_UNREADABLE_LOCK_GRACE_S = 60


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)
