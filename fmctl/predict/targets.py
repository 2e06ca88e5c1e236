"""What `fmctl predict TARGET` points at, opened into one callable shape.

A run folder is served by PyTorch through fmctl's own preprocessing; an export folder by
its format's runtime through the preprocessing its manifest describes: ONNX with ONNX
Runtime, `tokenizers`, Pillow and numpy only (torch is never imported), TorchScript with
torch.jit, an hf folder with transformers or timm. Which tasks and formats predict can
serve is the explicit table below.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fmctl.errors import RunFolderError

# task -> what its inputs are; formats predict can run (safetensors holds weights only).
TASK_INPUTS = {"text_classification": "text", "image_classification": "image"}
PREDICT_FORMATS = ("onnx", "torchscript", "hf")


@dataclass
class Target:
    path: Path
    description: str
    task: str
    label_names: list[str]
    input_kind: str                                # 'text' or 'image'
    text_column: str | None
    text_pair_column: str | None
    encode: Callable[[list[Any]], Any]             # values -> (feed, errors)
    logits: Callable[[dict[str, Any]], Any]        # feed -> numpy logits


def open_target(path: Path) -> Target:
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path}: no such run folder or export folder")
    folder = path.parent if path.is_file() else path
    if path.is_file() and path.suffix not in (".onnx", ".pt"):
        raise RunFolderError(f"{path}: expected a run folder, an export folder or its model.onnx / model.pt")
    if (folder / "config.yaml").is_file() and (folder / "model").is_dir() and not path.is_file():
        return _run_folder(folder)
    if (folder / "export_manifest.json").is_file() or any((folder / n).is_file() for n in ("model.onnx", "model.pt")):
        from fmctl.export import manifest as manifest_mod

        return _export_folder(folder, manifest_mod.read(folder))
    if (folder / "config.yaml").is_file():
        raise RunFolderError(f"{folder}: no model/ folder; was the run completed?")
    raise RunFolderError(f"{folder}: neither a run folder (config.yaml + model/) nor an export folder "
                         f"(export_manifest.json)")


def _check_task(task: str, where: Path) -> str:
    if task not in TASK_INPUTS:
        raise RunFolderError(f"{where}: predict does not serve task '{task}'; it serves {', '.join(TASK_INPUTS)}")
    return TASK_INPUTS[task]


def _export_folder(folder: Path, manifest: dict[str, Any]) -> Target:
    from fmctl.predict import encode

    fmt, task = manifest.get("format"), manifest.get("task", "")
    kind = _check_task(task, folder)
    if fmt not in PREDICT_FORMATS:
        raise RunFolderError(f"{folder}: a '{fmt}' export cannot be served by predict (it serves "
                             f"{', '.join(PREDICT_FORMATS)} exports and run folders)")
    prep = manifest["preprocessing"]
    names = [spec["name"] for spec in manifest["inputs"]]
    if kind == "text":
        encoder: Any = encode.LightTextEncoder(folder, prep, names)
    elif prep.get("crop_mode", "center") in ("center", "squash"):
        encoder = encode.LightImageEncoder(prep)
    else:
        encoder = encode.ReferenceImageEncoder(prep)
    runner, what = _RUNNERS[fmt](folder, manifest, names)
    return Target(folder, f"{fmt}{'-' + manifest['quantize'] if manifest.get('quantize') else ''} export "
                  f"({what})", task, list(manifest["label_names"]), kind, prep.get("text_column"),
                  prep.get("text_pair_column"), encoder, runner)


def _onnx_runner(folder: Path, manifest: dict[str, Any], names: list[str]) -> tuple[Callable, str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / manifest["files"]["model"]), options,
                                   providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    return (lambda feed: session.run(None, {n: feed[n] for n in wanted})[0]), "onnxruntime"


def _torchscript_runner(folder: Path, manifest: dict[str, Any], names: list[str]) -> tuple[Callable, str]:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice; the file is ours
        module = torch.jit.load(str(folder / manifest["files"]["model"]), map_location="cpu").eval()

    def run(feed: dict[str, Any]) -> Any:
        with torch.no_grad():
            return module(*[torch.from_numpy(feed[n]) for n in names]).numpy()

    return run, "torch.jit"


def _hf_runner(folder: Path, manifest: dict[str, Any], names: list[str]) -> tuple[Callable, str]:
    return _torch_runner(manifest["task"], folder / manifest["files"]["model_folder"]), manifest.get("library", "torch")


_RUNNERS = {"onnx": _onnx_runner, "torchscript": _torchscript_runner, "hf": _hf_runner}


def _torch_runner(task: str, model_dir: Path) -> Callable[[dict[str, Any]], Any]:
    import torch

    from fmctl.config.schema import ClassificationTaskConfig
    from fmctl.tasks import get_task

    model = get_task(ClassificationTaskConfig(name=task)).load_model(model_dir).eval()
    text = TASK_INPUTS[task] == "text"

    def run(feed: dict[str, Any]) -> Any:
        with torch.no_grad():
            if text:
                return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.float().numpy()
            return model(torch.from_numpy(feed["pixel_values"])).float().numpy()

    return run


def _run_folder(folder: Path) -> Target:
    from fmctl.config.compose import load_run_config
    from fmctl.predict import encode

    _, run = load_run_config(folder, [])
    model_dir = folder / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"{folder}: no model/ folder with config.json; was the run completed?")
    kind = _check_task(run.task.name, folder)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if kind == "text":
        from fmctl.models.text import load_tokenizer_only

        tokenizer = load_tokenizer_only(model_dir)
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
        encoder: Any = encode.ReferenceTextEncoder(tokenizer, int(tokenizer.model_max_length),
                                                   run.data.text_pair_column is not None, names)
        id2label = config.get("id2label") or {}
        labels = [id2label[k] for k in sorted(id2label, key=int)]
    else:
        from fmctl.models.vision import preprocessing_from_cfg

        encoder = encode.ReferenceImageEncoder(preprocessing_from_cfg(config["pretrained_cfg"]))
        labels = list(config.get("label_names") or [str(i) for i in range(int(config["num_classes"]))])
    return Target(folder, "run folder (PyTorch)", run.task.name, labels, kind, run.data.text_column,
                  run.data.text_pair_column, encoder, _torch_runner(run.task.name, model_dir))
