"""One function per format: write the artefact into a (temporary) folder, reload it the
way a deployment would, and check it against the PyTorch model on real batches.

Each returns the manifest entries it is responsible for; it raises ExportError when the
artefact does not compute what the model computes, and the caller then discards the
folder, so no valid-looking artefact is ever left behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fmctl.export import parity as parity_mod
from fmctl.export.io import Batch, ExportIO

DEFAULT_ATOL = 1e-4
DEFAULT_INT8_AGREEMENT = 0.95


@dataclass
class ExportOptions:
    fmt: str
    quantize: str | None = None
    atol: float = DEFAULT_ATOL                    # fp32 outputs must agree this closely
    min_agreement: float | None = None            # None: report only (fp32); int8 default 0.95
    opset: int = 18
    exporter: str = "auto"                        # ONNX: auto | dynamo | torchscript
    max_examples: int = 512                       # validation examples compared
    batch_size: int = 32
    calibration_examples: int = 128               # int8-static: training examples
    benchmark: bool = False                       # latency figures without --quantize too
    threads: int | None = None                    # CPU threads for PyTorch and ONNX Runtime timing


@dataclass
class Context:
    io: ExportIO
    model: Any                                    # as the task loads it
    module: Any                                   # positional wrapper returning logits
    batches: list[Batch]
    options: ExportOptions
    log: Callable[[str], None]
    scratch: Path                                 # outside the export folder, removed afterwards

    def reference(self) -> Callable[[dict[str, Any]], Any]:
        import torch

        names = self.io.input_names()

        def run(inputs: dict[str, Any]) -> list[Any]:
            with torch.no_grad():
                return _numpy_outputs(self.module(*[inputs[n] for n in names]))

        return run

    def example(self) -> tuple[Any, ...]:
        """Export example: two real examples of different lengths where possible, so no
        axis is specialised to 1 and padding is present."""
        batch = self.io.batch_of(2)
        names = self.io.input_names()
        return tuple(batch.inputs[n][:2] for n in names)


def _numpy_outputs(out: Any) -> list[Any]:
    """A module's output(s) as a list of numpy arrays, in the task's output_names order."""
    if hasattr(out, "logits"):
        out = out.logits
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def _torch_candidate(module: Any, names: list[str]) -> Callable[[dict[str, Any]], Any]:
    import torch

    def run(inputs: dict[str, Any]) -> list[Any]:
        with torch.no_grad():
            return _numpy_outputs(module(*[inputs[n] for n in names]))

    return run


def _ort_candidate(session: Any, names: list[str]) -> Callable[[dict[str, Any]], Any]:
    outputs = [o.name for o in session.get_outputs()]

    def run(inputs: dict[str, Any]) -> list[Any]:
        return session.run(outputs, {n: inputs[n].numpy() for n in names})

    return run


def _check(ctx: Context, candidate: Callable[[dict[str, Any]], Any], name: str, atol: float | None,
           min_agreement: float | None) -> tuple[parity_mod.Parity, parity_mod.Comparison]:
    result, comparison = parity_mod.compare(ctx.batches, ctx.reference(), candidate, ("pytorch fp32", name),
                                            atol, min_agreement, ctx.io.measure())
    ctx.log(f"parity: {result.summary()}")
    parity_mod.require(result)
    return result, comparison


def _parity_record(ctx: Context, result: Any) -> dict[str, Any]:
    """The parity result for the manifest, with the split its examples came from."""
    return {**result.as_dict(), "split": ctx.io.parity_split}


def _evaluation(ctx: Context, comparisons: dict[str, parity_mod.Comparison]) -> dict[str, Any]:
    first = next(iter(comparisons.values()))
    accuracy = {"pytorch_fp32": first.accuracy("reference")}
    accuracy.update({name: c.accuracy("candidate") for name, c in comparisons.items()})
    return {"split": ctx.io.parity_split, "examples": first.result.examples, "metric": first.measure.metric,
            "accuracy": accuracy}


def write_onnx(ctx: Context, folder: Path) -> dict[str, Any]:
    """model.onnx in `folder` (a several-graph task: <graph>.onnx, one call per graph). With
    --quantize the fp32 graph is made in the scratch folder, checked, quantized into
    `folder`, and the int8 model checked in turn."""
    import torch

    from fmctl.export import onnx as onnx_mod
    from fmctl.export.measure import latency_table

    opts, io = ctx.options, ctx.io
    names = io.input_names()
    path = folder / f"{io.file_stem}.onnx"
    fp32_path = ctx.scratch / path.name if opts.quantize else path
    info = onnx_mod.export_onnx(ctx.module, ctx.example(), names, io.output_names, io.dynamic_axes(), fp32_path,
                                opset=opts.opset, exporter=opts.exporter, max_sequence=io.max_sequence(),
                                output_axes=io.output_axes())
    ctx.log(f"onnx: written by the {info['exporter']} exporter, opset {opts.opset}; onnx.checker passed")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    threads = torch.get_num_threads()
    sessions = {"onnx_fp32": onnx_mod.session(fp32_path, threads)}
    fp32_parity, fp32_cmp = _check(ctx, _ort_candidate(sessions["onnx_fp32"], names), "onnxruntime fp32",
                                   opts.atol, None if opts.quantize else opts.min_agreement)
    out: dict[str, Any] = {"files": {"model": path.name}, "onnx": info, "parity": _parity_record(ctx, fp32_parity)}
    comparisons = {"onnx_fp32": fp32_cmp}
    if opts.quantize:
        from fmctl.export import quantize as quant_mod

        calibration = _calibration_feeds(ctx) if opts.quantize == "int8-static" else None
        out["quantization"] = quant_mod.quantize(fp32_path, path, opts.quantize, calibration)
        ctx.log(f"quantized: {opts.quantize} ({out['quantization']['size_bytes']:,} bytes, fp32 "
                f"{out['quantization']['fp32_size_bytes']:,})")
        sessions["onnx_int8"] = onnx_mod.session(path, threads)
        agreement = DEFAULT_INT8_AGREEMENT if opts.min_agreement is None else opts.min_agreement
        int8_parity, comparisons["onnx_int8"] = _check(ctx, _ort_candidate(sessions["onnx_int8"], names),
                                                       f"onnxruntime {opts.quantize}", None, agreement)
        out["parity_int8"] = _parity_record(ctx, int8_parity)
    out["evaluation"] = _evaluation(ctx, comparisons)
    if io.generates_text:
        out.update(_write_kv_cache(ctx, folder))
    if opts.quantize or opts.benchmark:
        feeds = {size: io.batch_of(size).inputs for size in (1, 32)}
        runners = {"pytorch_fp32": ctx.reference()}
        runners.update({name: _ort_candidate(s, names) for name, s in sessions.items()})
        import os

        out["latency"] = {"threads": threads, "load_average_1min": round(os.getloadavg()[0], 2), "method": "median of >=7 timed runs (>=0.3 s) after 2 warm-up "
                          "runs, on real validation inputs", "results": latency_table(runners, feeds)}
    out.update(onnx_mod.graph_io(path))
    return out


def _write_kv_cache(ctx: Context, folder: Path) -> dict[str, Any]:
    """A causal LM's decoder_with_past.onnx for generation, fp32 exports only; a graph that
    cannot be captured or does not decode as PyTorch does is left out (model.onnx still
    generates, without a cache) and the manifest says why."""
    from fmctl.export import kv_cache

    if ctx.options.quantize:
        return {"kv_cache": {"written": False, "reason": "quantized exports generate with model.onnx (no cache)"}}
    batch = ctx.io.batch_of(kv_cache.PARITY_PROMPTS).inputs
    room = max(4, (ctx.io.max_sequence() or 64) - kv_cache.PARITY_STEPS - 1)
    prompts = [[int(t) for t, keep in zip(ids, mask) if keep][: min(12, room)] or [int(ids[0])]
               for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())]
    try:
        entry = kv_cache.write(ctx.model, prompts, folder / kv_cache.FILE_NAME, ctx.options.opset, ctx.options.atol)
    except Exception as exc:  # torch.export raises many types for models it cannot capture
        (folder / kv_cache.FILE_NAME).unlink(missing_ok=True)
        reason = " ".join(str(exc).split())[:200]
        ctx.log(f"kv cache: not written ({type(exc).__name__}: {reason}); generation uses model.onnx")
        return {"kv_cache": {"written": False, "reason": f"{type(exc).__name__}: {reason}"}}
    ctx.log(f"kv cache: {kv_cache.FILE_NAME} decodes as PyTorch does "
            f"(max abs diff {entry['parity']['max_abs_diff']:.2g} over {entry['parity']['prompts']} prompts)")
    return {"kv_cache": {"written": True, **entry}}


def _calibration_feeds(ctx: Context) -> Any:
    """Training-split batches as numpy feeds, for static quantization's activation ranges."""
    io, opts = ctx.io, ctx.options
    data = io.task.export_data(io.run, io.model_dir, "train")
    names = io.input_names()
    count = min(opts.calibration_examples, len(data.train))
    for start in range(0, count, 16):
        batch = data.collate([data.train[i] for i in range(start, min(count, start + 16))])
        yield {n: batch[n].numpy() for n in names}


def write_torchscript(ctx: Context, folder: Path) -> dict[str, Any]:
    from fmctl.export import torchscript

    path = folder / "model.pt"
    info = torchscript.trace(ctx.module, ctx.example(), path)
    loaded = torchscript.load(path)
    result, comparison = _check(ctx, _torch_candidate(loaded, ctx.io.input_names()), "torchscript", ctx.options.atol,
                                ctx.options.min_agreement)
    return {"files": {"model": "model.pt"}, "torchscript": info, "parity": _parity_record(ctx, result),
            "evaluation": _evaluation(ctx, {"torchscript": comparison}), **_declared_io(ctx)}


def write_safetensors(ctx: Context, folder: Path) -> dict[str, Any]:
    import json

    from fmctl.export import weights

    path = folder / "model.safetensors"
    arch = weights.architecture(ctx.io.model_dir, ctx.io.auto_class)
    weights.save_safetensors(ctx.model, path, {"format": "pt", "fmctl_task": ctx.io.task_name,
                                               "label_names": json.dumps(ctx.io.label_names)})
    rebuilt = weights.rebuild_from_safetensors(arch, path)
    candidate = _torch_candidate(ctx.io.module(rebuilt), ctx.io.input_names())
    result, comparison = _check(ctx, candidate, "safetensors reloaded", ctx.options.atol, ctx.options.min_agreement)
    return {"files": {"weights": "model.safetensors"}, "architecture": arch, "parity": _parity_record(ctx, result),
            "evaluation": _evaluation(ctx, {"safetensors": comparison}), **_declared_io(ctx)}


def write_hf(ctx: Context, folder: Path) -> dict[str, Any]:
    model_folder = folder / "model"
    ctx.io.save_model(ctx.model, model_folder)
    reloaded = ctx.io.reload(model_folder)
    candidate = _torch_candidate(ctx.io.module(reloaded), ctx.io.input_names())
    result, comparison = _check(ctx, candidate, "hf folder reloaded", ctx.options.atol, ctx.options.min_agreement)
    library = "timm" if (model_folder / "config.json").read_text(encoding="utf-8").find('"model_args"') >= 0 \
        else "transformers"
    load = ("timm.create_model('local-dir:model', pretrained=True)" if library == "timm"
            else f"{ctx.io.auto_class}.from_pretrained('model'); AutoTokenizer.from_pretrained('model')")
    return {"files": {"model_folder": "model"}, "library": library, "load": load, "parity": _parity_record(ctx, result),
            "evaluation": _evaluation(ctx, {"hf": comparison}), **_declared_io(ctx)}


def _declared_io(ctx: Context) -> dict[str, Any]:
    return {"inputs": ctx.io.input_specs(), "outputs": ctx.io.output_specs()}


WRITERS: dict[str, Callable[[Context, Path], dict[str, Any]]] = {
    "onnx": write_onnx,
    "torchscript": write_torchscript,
    "safetensors": write_safetensors,
    "hf": write_hf,
}
