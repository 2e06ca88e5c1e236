"""The run folder: the hand-off between verbs, written so it is never half-valid.

Files are written under a temporary name and renamed into place; checkpoint folders
likewise. A new run never writes into a non-empty folder unless asked (overwrite=true).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fmctl.errors import RunFolderError


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


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> "RunFolder":
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"run_dir: '{path}' exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise RunFolderError(f"run_dir: '{path}' already holds files; choose another run_dir= or pass "
                                     f"overwrite=true to replace them")
            for child in path.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-probe"
            probe.write_bytes(b"\0" * 4096)
            probe.unlink()
        except OSError as exc:
            raise RunFolderError(f"run_dir: cannot write to '{path}' ({exc.strerror or exc})") from None
        return cls(path)

    def write_config(self, raw_cfg: Any) -> None:
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(OmegaConf.to_container(raw_cfg, resolve=True))
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
        import torch
        from safetensors.torch import save_model

        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints_dir / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.checkpoints_dir))
        try:
            save_model(_unwrap(model), str(tmp / "model.safetensors"))
            if state is not None:
                torch.save(state, tmp / "state.pt")
            (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
            if final.exists():
                old = final.with_name(f".{name}-old")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
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


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)
