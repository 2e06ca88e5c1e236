"""A two-tower model (task contrastive) opened for predict: images and texts in,
L2-normalised embeddings out, from a run folder (PyTorch, fmctl's own preprocessing) or
an ONNX export (its image_encoder.onnx and text_encoder.onnx with ONNX Runtime,
`tokenizers`, Pillow and numpy: torch is not imported).

Both report the temperature and templates the model was trained with, so zero-shot
scores are computed the same way from either."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fmctl.errors import RunFolderError

READS = "image_text"


@dataclass
class Towers:
    description: str
    images: Callable[[list[Path]], tuple[Any, dict[int, str]]]   # paths -> (embeddings of the good ones, errors)
    texts: Callable[[list[str]], Any]                             # texts -> embeddings
    logit_scale: float
    logit_bias: float | None
    templates: list[str]
    text_column: str


def task_of(path: Path) -> str | None:
    """The task of a run folder or export folder, read from its config or manifest
    without loading anything (None when path is neither)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    try:
        if (folder / "export_manifest.json").is_file():
            return json.loads((folder / "export_manifest.json").read_text(encoding="utf-8")).get("task")
        if (folder / "config.yaml").is_file():
            from omegaconf import OmegaConf

            return OmegaConf.select(OmegaConf.load(folder / "config.yaml"), "task.name")
    except Exception:  # an unreadable folder is reported by the ordinary path
        return None
    return None


def serves(path: Path) -> bool:
    """Whether `path` is a two-tower model's run or export folder."""
    from fmctl import tasks

    name = task_of(path)
    return name in tasks.names() and tasks.declaration(name).serving.reads == READS


def open_towers(path: Path) -> Towers:
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if (folder / "export_manifest.json").is_file():
        return _export(folder)
    return _run_folder(folder)


def _export(folder: Path) -> Towers:
    import numpy as np

    from fmctl.export import manifest as manifest_mod
    from fmctl.predict.encode import LightImageEncoder, LightTextEncoder

    manifest = manifest_mod.read(folder)
    if manifest.get("format") != "onnx":
        raise RunFolderError(f"{folder}: a two-tower model predicts from its onnx export or its run folder")
    sessions = {name: _session(folder / file) for name, file in manifest["files"].items()}
    image_prep, text_prep = manifest["preprocessing"]["image_encoder"], manifest["preprocessing"]["text_encoder"]
    image_encoder = LightImageEncoder(image_prep)
    text_names = [spec["name"] for spec in manifest["graphs"]["text_encoder"]["inputs"]]
    text_encoder = LightTextEncoder(folder, text_prep, text_names)

    def images(paths: list[Path]) -> tuple[Any, dict[int, str]]:
        feed, errors = image_encoder(paths)
        return (sessions["image_encoder"].run(None, feed)[0] if feed else np.zeros((0, 0), np.float32)), errors

    def texts(values: list[str]) -> Any:
        feed, _ = text_encoder([{"text": v, "text_pair": None} for v in values])
        return sessions["text_encoder"].run(None, feed)[0]

    post = manifest["postprocessing"]
    quantized = f"-{manifest['quantize']}" if manifest.get("quantize") else ""
    return Towers(f"onnx{quantized} export (onnxruntime)", images, texts, float(post["logit_scale"]),
                  post.get("logit_bias"), list(post["templates"]), text_prep.get("text_column") or "text")


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_folder(folder: Path) -> Towers:
    import torch

    from fmctl import backbones, tasks
    from fmctl.config.saved_runs import load_run_config
    from fmctl.predict.encode import ReferenceImageEncoder

    _, run = load_run_config(folder, [])
    model_dir = folder / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"{folder}: no model/ folder with config.json; was the run completed?")
    task = tasks.create(run.task)
    model = task.load_model(model_dir).eval()
    prep = backbones.of_folder(model_dir).preprocessor(run.backbone, folder=model_dir)
    image_encoder, tokenizer = ReferenceImageEncoder(prep["image"]), prep["text"]

    def images(paths: list[Path]) -> tuple[Any, dict[int, str]]:
        feed, errors = image_encoder(paths)
        if not feed:
            return torch.zeros(0, 0).numpy(), errors
        with torch.no_grad():
            return model.encode_image(torch.from_numpy(feed["pixel_values"])).float().numpy(), errors

    def texts(values: list[str]) -> Any:
        batch = tokenizer(values, padding=True, truncation=True, max_length=int(tokenizer.model_max_length),
                          return_tensors="pt")
        with torch.no_grad():
            return model.encode_text(batch["input_ids"], batch["attention_mask"],
                                     batch.get("token_type_ids")).float().numpy()

    post = task.postprocessing(run, [], model_dir)
    return Towers("run folder (PyTorch)", images, texts, float(post["logit_scale"]), post.get("logit_bias"),
                  list(post["templates"]), run.data.text_column)
