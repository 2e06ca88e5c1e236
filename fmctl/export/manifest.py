"""export_manifest.json: everything a deployment needs to know about an export folder.

Format, the model's inputs (names, dtypes, shapes with symbolic axes) and outputs, the
label names, the preprocessing (a tokenizer folder next to the model, or image size and
normalisation), the parity figures that vouch for it, and the fmctl version.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fmctl import __version__
from fmctl.errors import RunFolderError

MANIFEST = "export_manifest.json"
SCHEMA_VERSION = 1


def base(fmt: str, quantize: str | None, run_dir: Path, task: str, label_names: list[str]) -> dict[str, Any]:
    run_manifest_path = run_dir / "manifest.json"
    run_manifest = json.loads(run_manifest_path.read_text(encoding="utf-8")) if run_manifest_path.is_file() else {}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": fmt,
        "quantize": quantize,
        "task": task,
        "label_names": list(label_names),
        "fmctl_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "source": {"run_dir": str(run_dir.resolve()), "recipe": run_manifest.get("recipe"),
                   "backbone": run_manifest.get("backbone"), "model_step": run_manifest.get("model_step"),
                   "git_revision": run_manifest.get("git_revision")},
    }


def write(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def read(folder: Path) -> dict[str, Any]:
    """The manifest of an export folder; a folder (or model file) without one is refused,
    since labels and preprocessing cannot be guessed from the model file."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise RunFolderError(f"{folder}: no {MANIFEST}; predict needs the manifest that `fmctl export` writes "
                             f"next to the model (label names and preprocessing); re-export the run folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
