"""Resume policy: whether a run continues, from which checkpoint, and what changed since.

trainer.resume=auto continues from the newest complete checkpoint in run_dir (a fresh
start when there is none) and leaves a completed run alone unless its step budget grew;
trainer.resume=PATH continues from that checkpoint of that run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmctl.checkpoint import RunFolder
from fmctl.config.schema import RunConfig
from fmctl.errors import RunFolderError

# Keys that may change between an interrupted run and its resumption without a warning.
_RESUME_FREE_KEYS = {"trainer.resume", "trainer.progress", "trainer.num_threads", "trainer.max_steps",
                     "trainer.epochs", "trainer.log_every", "run_dir", "overwrite"}


def already_completed(run: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The manifest of a run that trainer.resume=auto would only redo: completed (early
    stopping included) with the same step budget. Why: a scheduler that requeues the same
    command must not retrain past an early stop or re-run the last steps and rewrite
    model/; raising max_steps or epochs still continues the run."""
    if run.trainer.resume != "auto" or not (run_dir / "manifest.json").is_file():
        return None
    from omegaconf import OmegaConf

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    saved_file = run_dir / "config.yaml"
    if manifest.get("status") != "completed" or "metrics" not in manifest or not saved_file.is_file():
        return None
    saved = OmegaConf.load(saved_file).get("trainer", {})
    same_budget = (saved.get("max_steps") == run.trainer.max_steps and saved.get("epochs") == run.trainer.epochs)
    return manifest if same_budget else None


def resume_point(run: RunConfig, run_dir: Path) -> Path | None:
    """The checkpoint folder to continue from, or None to start fresh."""
    from fmctl.checkpoint import CHECKPOINT_FILES, checkpoint_complete, latest_checkpoint

    resume = run.trainer.resume
    if resume is None:
        return None
    if resume == "auto":
        found = latest_checkpoint(run_dir)
        if found is None and run_dir.is_dir() and any(run_dir.iterdir()):
            manifest = run_dir / "manifest.json"
            if not manifest.is_file():
                raise RunFolderError(f"run_dir: '{run_dir}' holds files but is not an fmctl run folder; "
                                     f"trainer.resume=auto will not replace it")
        return found
    path = Path(resume).expanduser()
    if not path.is_dir() or not checkpoint_complete(path):
        raise RunFolderError(f"trainer.resume: '{resume}' is not a complete checkpoint folder "
                             f"(needs {', '.join(CHECKPOINT_FILES)}); use trainer.resume=auto for the newest")
    if path.resolve().parent.parent != run_dir.resolve():
        raise RunFolderError(f"trainer.resume: '{resume}' belongs to '{path.parent.parent}', not to run_dir "
                             f"'{run_dir}'; drop run_dir= to continue that run")
    return path


def load_training_state(checkpoint: Path | None, model: Any, run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint's training state for fit(), its weights loaded into `model`; a sharded
    (FSDP) checkpoint's weights and optimizer are read in fit, resharded to this world size."""
    if checkpoint is None:
        return None
    from fmctl.loop.state import load_state

    state = load_state(checkpoint / "state.pt")
    if (checkpoint / "model.safetensors").is_file():
        RunFolder(run_dir).load_weights(checkpoint.name, model)
    else:
        state["dcp"] = str(checkpoint / "dcp")
    return state


def warn_on_changes(folder: RunFolder, raw_cfg: Any, data: Any, out: Any) -> None:
    """Say which settings and data files differ from the run being resumed: the result then
    will not match an uninterrupted run."""
    from omegaconf import OmegaConf

    from fmctl.paths import absolute_local_paths

    saved_file = folder.path / "config.yaml"
    if saved_file.is_file():
        saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_file), resolve=True))
        now = _flatten(absolute_local_paths(OmegaConf.to_container(raw_cfg, resolve=True)))
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUME_FREE_KEYS)
        if _global_batch(saved) == _global_batch(now):  # rank r takes positions r, r+N, ...: the same steps
            changed = [k for k in changed if k not in ("trainer.batch_size", "trainer.nproc")]
        if changed:
            out.print(f"warning: resuming with a config that differs from the run's config.yaml in: "
                      f"{', '.join(changed)}; the result will not match an uninterrupted run", soft_wrap=True)
    recorded = folder.read_manifest().get("data", {})
    for split, now in data.sources.items():
        before = recorded.get(split)
        if before and now and before.get("bytes") != now.get("bytes"):
            out.print(f"warning: {now['path']} changed size since the run started")


def _global_batch(flat: dict[str, Any]) -> Any:
    return (flat.get("trainer.batch_size") or 0) * (flat.get("trainer.nproc") or 1)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}
