"""What `fmctl probe SOURCE` points at: a run folder (fine-tuned or pretraining), or a
local pretrained folder (`pkg:` paths too), resolved to the model folder, the backbone
family that loads it, the data it was trained on when that data is labelled, and where
the probe writes."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.errors import ConfigError, RunFolderError


@dataclass
class Source:
    spec: str
    model_dir: Path
    run_dir: Path | None
    family: Any                       # fmctl.backbones.base.BackboneFamily
    task: str | None                  # the run's task, when SOURCE is a run folder
    run_data: dict[str, Any] | None   # the run's data config (a dict), when SOURCE is a run folder

    @property
    def name(self) -> str:
        """A folder-name-safe name for the source (runs/probe/<name>/)."""
        where = self.spec[4:] if self.spec.startswith("pkg:") else str(Path(self.spec).expanduser().resolve().name)
        return re.sub(r"[^A-Za-z0-9._-]+", "_", where).strip("_") or "model"

    def default_out(self, random_init: bool) -> Path:
        leaf = "probe-random" if random_init else "probe"
        return (self.run_dir if self.run_dir is not None else Path("runs") / "probe" / self.name) / leaf


def resolve_source(spec: str) -> Source:
    """The SOURCE of `fmctl probe`, or one line saying what it is not."""
    from fmctl import backbones
    from fmctl.models import pretrained

    path = Path(spec).expanduser()
    if not spec.startswith("pkg:") and not path.exists():
        raise RunFolderError(f"SOURCE: '{spec}' does not exist; give a run folder or a local model folder "
                             f"(save_pretrained / timm save_for_hf layout)")
    if (path / "config.yaml").is_file():
        if not (path / "model" / "config.json").is_file():
            raise RunFolderError(f"{path}: no model/ folder with config.json; was the run completed?")
        task, data = _run_task_and_data(path)
        return Source(spec, path / "model", path, backbones.of_folder(path / "model"), task, data)
    model_dir = pretrained.resolve(spec, key="SOURCE")
    if not isinstance(model_dir, Path) or not model_dir.is_dir():
        raise RunFolderError(f"SOURCE: '{spec}' is not a model folder")
    return Source(spec, model_dir, None, backbones.of_folder(model_dir), None, None)


def _run_task_and_data(run_dir: Path) -> tuple[str | None, dict[str, Any] | None]:
    from omegaconf import OmegaConf

    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    task = (saved.get("task") or {}).get("name")
    return task, saved.get("data")


def modality_of(source: Source, tower: str | None) -> str:
    """The modality to probe: the backbone's only one, or the tower asked for."""
    modalities = tuple(source.family.modalities)
    if tower is None:
        if len(modalities) > 1:
            raise ConfigError(f"tower: {source.model_dir} is a {'+'.join(modalities)} model; choose tower="
                              f"{' or tower='.join(modalities)}")
        return modalities[0]
    if tower not in modalities:
        raise ConfigError(f"tower: '{tower}' is not a tower of {source.model_dir} (it has {', '.join(modalities)})")
    return tower


def labelled_task_for(modality: str) -> Any:
    """The declaration whose labelled data feeds probes of `modality` (probe_data=True)."""
    from fmctl import tasks

    for declared in tasks.declarations():
        if declared.probe_data and declared.serving.modality == modality:
            return declared
    raise ConfigError(f"probe: no task reads labelled {modality} data for probing")


def data_of_source(source: Source, declared: Any) -> dict[str, Any] | None:
    """The run's own data when it is labelled data of the probe's task (a fine-tuned
    classifier of that modality), else None: a pretraining run, another task, a folder."""
    if source.run_data is None or source.task not in declared.names:
        return None
    return source.run_data
