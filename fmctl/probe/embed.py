"""Embed the labelled splits with a frozen backbone, batched, with progress, and cache
the features so that a second probe with other settings (k, C, pooling) reads them back.

The cache key covers everything the features depend on: the model folder's files (names,
sizes, modification times), the initialisation, the data settings and the data files'
fingerprints. Every pooling the backbone offers is stored, so changing `pooling` does
not re-embed either. Files are NumPy archives read with allow_pickle=False.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
_FORMAT = "fmctl-probe-features-1"


@dataclass
class Features:
    vectors: dict[str, dict[str, Any]]     # split -> pooling -> (examples, width) float32
    labels: dict[str, Any]                 # split -> (examples,) int
    label_names: list[str]
    poolings: list[str]
    folder: Path
    cached: bool


def features(source: Any, cfg: Any, modality: str, out: Path, console: Any) -> Features:
    """The source's features of cfg.data's splits: from the cache, else embedded now."""
    folder = out / "features" / cache_key(source, cfg, modality)
    if (folder / "features.json").is_file():
        return _read(folder)
    _embed_into(folder, source, cfg, modality, console)
    return _read(folder, cached=False)


def cache_key(source: Any, cfg: Any, modality: str) -> str:
    from fmctl.data.sources import fingerprint, split_paths

    model_files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in source.model_dir.iterdir()
                         if p.is_file())
    parts = {"format": _FORMAT, "model_dir": str(source.model_dir.resolve()), "model_files": model_files,
             "modality": modality, "init": cfg.init, "seed": cfg.seed if cfg.init == "random" else None,
             "data": asdict(cfg.data),
             "files": {split: fingerprint(path) for split, path in split_paths(cfg.data).items()}}
    digest = hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    return f"{cfg.init}-{digest}"


def _embed_into(folder: Path, source: Any, cfg: Any, modality: str, console: Any) -> None:
    """Embed every split into a temporary folder, renamed into place when complete."""
    import numpy as np

    from fmctl.probe.source import labelled_task_for

    declared = labelled_task_for(modality)
    task = declared.implementation(declared.config(name=declared.name))
    encoder = source.family.encoder(source.model_dir, modality, random_init=cfg.init == "random", seed=cfg.seed)
    data = task.prepare_with(_run_for(source, cfg, declared), encoder.preprocessor, SPLITS)
    for warning in data.warnings:
        console.print(f"warning: {warning}", soft_wrap=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".features-", dir=folder.parent))
    try:
        counts = {}
        for split in SPLITS:
            dataset = getattr(data, split)
            if dataset is None or not len(dataset):
                continue
            vectors, labels = _embed_split(encoder, dataset, data.collate, cfg, split, console)
            np.savez(tmp / f"{split}.npz", labels=labels, **vectors)
            counts[split] = int(len(labels))
        meta = {"format": _FORMAT, "source": source.spec, "model_dir": str(source.model_dir), "init": cfg.init,
                "modality": modality, "label_names": list(data.label_names), "poolings": list(encoder.poolings),
                "examples": counts, "width": int(next(iter(vectors.values())).shape[1])}
        (tmp / "features.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run_for(source: Any, cfg: Any, declared: Any) -> Any:
    """The RunConfig the data readers take: the probe's data settings, the source's family."""
    from fmctl.config.schema import RunConfig, TrainerConfig

    return RunConfig(data=cfg.data, backbone=source.family.config(name=source.family.name),
                     task=declared.config(name=declared.name), trainer=TrainerConfig(device=cfg.device))


def _embed_split(encoder: Any, dataset: Any, collate: Any, cfg: Any, split: str, console: Any) -> tuple[dict, Any]:
    import numpy as np
    import torch

    from fmctl.loop.eval_progress import EvalProgress
    from fmctl.loop.fit import make_loader, move
    from fmctl.loop.precision import pick_device

    device = pick_device(cfg.device)
    encoder.model.to(device)
    loader = make_loader(dataset, cfg.batch_size, collate)
    pooled: dict[str, list[Any]] = {name: [] for name in encoder.poolings}
    labels = []
    with EvalProgress(len(loader), console, cfg.progress, f"embed {split}") as progress, torch.inference_mode():
        for batch in loader:
            batch.pop("num_tokens", None)
            labels.append(batch.pop("labels"))
            out = encoder(move(batch, device))
            for name in encoder.poolings:
                pooled[name].append(out[name].float().cpu())
            progress.advance(int(labels[-1].shape[0]))
    vectors = {name: torch.cat(parts).numpy().astype(np.float32) for name, parts in pooled.items()}
    return vectors, torch.cat(labels).numpy().astype(np.int64)


def _read(folder: Path, cached: bool = True) -> Features:
    import numpy as np

    meta = json.loads((folder / "features.json").read_text(encoding="utf-8"))
    vectors, labels = {}, {}
    for split in meta["examples"]:
        with np.load(folder / f"{split}.npz", allow_pickle=False) as archive:
            labels[split] = archive["labels"]
            vectors[split] = {name: archive[name] for name in meta["poolings"]}
    return Features(vectors, labels, meta["label_names"], meta["poolings"], folder, cached)
