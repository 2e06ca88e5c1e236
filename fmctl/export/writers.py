"""One function per format: write the artefact into a (temporary) folder, reload it the
way a deployment would, and check it against the PyTorch model on real batches.

Each returns the manifest entries it is responsible for; it raises ExportError when the
artefact does not compute what the model computes, and the caller then discards the
folder, so no valid-looking artefact is ever left behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fmctl.export.context import (DEFAULT_ATOL, DEFAULT_INT8_AGREEMENT, Context, ExportOptions,  # noqa: F401
                                  check, declared_io, evaluation, parity_record, torch_candidate)
from fmctl.export.onnx_writer import write_onnx


def write_torchscript(ctx: Context, folder: Path) -> dict[str, Any]:
    from fmctl.export import torchscript

    path = folder / "model.pt"
    info = torchscript.trace(ctx.module, ctx.example(), path)
    loaded = torchscript.load(path)
    result, comparison = check(ctx, torch_candidate(loaded, ctx.io.input_names()), "torchscript", ctx.options.atol,
                               ctx.options.min_agreement)
    return {"files": {"model": "model.pt"}, "torchscript": info, "parity": parity_record(ctx, result),
            "evaluation": evaluation(ctx, {"torchscript": comparison}), **declared_io(ctx)}


def write_safetensors(ctx: Context, folder: Path) -> dict[str, Any]:
    import json

    from fmctl.export import weights

    path = folder / "model.safetensors"
    arch = weights.architecture(ctx.io.model_dir, ctx.io.auto_class)
    weights.save_safetensors(ctx.model, path, {"format": "pt", "fmctl_task": ctx.io.task_name,
                                               "label_names": json.dumps(ctx.io.label_names)})
    rebuilt = weights.rebuild_from_safetensors(arch, path)
    candidate = torch_candidate(ctx.io.module(rebuilt), ctx.io.input_names())
    result, comparison = check(ctx, candidate, "safetensors reloaded", ctx.options.atol, ctx.options.min_agreement)
    return {"files": {"weights": "model.safetensors"}, "architecture": arch, "parity": parity_record(ctx, result),
            "evaluation": evaluation(ctx, {"safetensors": comparison}), **declared_io(ctx)}


def write_hf(ctx: Context, folder: Path) -> dict[str, Any]:
    model_folder = folder / "model"
    ctx.io.save_model(ctx.model, model_folder)
    reloaded = ctx.io.reload(model_folder)
    candidate = torch_candidate(ctx.io.module(reloaded), ctx.io.input_names())
    result, comparison = check(ctx, candidate, "hf folder reloaded", ctx.options.atol, ctx.options.min_agreement)
    library = "timm" if (model_folder / "config.json").read_text(encoding="utf-8").find('"model_args"') >= 0 \
        else "transformers"
    load = ("timm.create_model('local-dir:model', pretrained=True)" if library == "timm"
            else f"{ctx.io.auto_class}.from_pretrained('model'); "
                 f"{'AutoImageProcessor' if ctx.io.serving.modality == 'image' else 'AutoTokenizer'}"
                 f".from_pretrained('model')")
    return {"files": {"model_folder": "model"}, "library": library, "load": load, "parity": parity_record(ctx, result),
            "evaluation": evaluation(ctx, {"hf": comparison}), **declared_io(ctx)}


WRITERS: dict[str, Callable[[Context, Path], dict[str, Any]]] = {
    "onnx": write_onnx,
    "torchscript": write_torchscript,
    "safetensors": write_safetensors,
    "hf": write_hf,
}
