"""Write a model as ONNX with named inputs and dynamic batch (and sequence) axes.

Exporter choice, checked with torch 2.14 / onnx 1.23 / onnxruntime 1.32 on our BERT, GPT
and ViT models: both torch's exporters give outputs within 2e-7 of PyTorch. The
torch.export-based one (`dynamo=True`, needs onnxscript) is the default because it
captures the graph soundly (a data-dependent branch fails or is guarded, instead of being
silently frozen at the example's value as tracing does) and because the TorchScript-based
one is deprecated and announced for removal. It costs ~4 s per export on 2 cores versus
~0.3 s; `exporter="auto"` falls back to the TorchScript-based exporter when torch.export
cannot capture a model, and the manifest records which one wrote the file. Either way
the parity check, not the exporter, is what vouches for the artefact.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

from fmctl.errors import ExportError

DEFAULT_OPSET = 18
EXPORTERS = ("auto", "dynamo", "torchscript")
# Above this a single protobuf file is not allowed (2 GiB); weights go to model.onnx.data.
_SINGLE_FILE_LIMIT = 1_800_000_000


def export_onnx(module: Any, example: Sequence[Any], input_names: list[str], output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]], path: Path, opset: int = DEFAULT_OPSET,
                exporter: str = "auto", max_sequence: int | None = None,
                output_axes: dict[str, dict[int, str]] | None = None) -> dict[str, Any]:
    """Export `module(*example)` to `path`; returns what the manifest records about it."""
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"export: unknown exporter '{exporter}'; choose one of {', '.join(EXPORTERS)}")
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    info: dict[str, Any] = {"opset": opset}
    fallback_reason = None
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(module, tuple(example), input_names, output_names, dynamic_axes, path, opset,
                           max_sequence, external=size > _SINGLE_FILE_LIMIT)
            info["exporter"] = "dynamo"
        except ExportError:
            raise
        except Exception as exc:  # torch.export raises many types for models it cannot capture
            if exporter == "dynamo":
                raise ExportError(f"export: torch.export could not capture the model "
                                  f"({type(exc).__name__}: {_first_line(exc)}); try --exporter torchscript") from None
            fallback_reason = f"{type(exc).__name__}: {_first_line(exc)}"
            _remove_outputs(path)
    if "exporter" not in info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and tracer warnings; parity is checked next
            torch.onnx.export(module, tuple(example), str(path), input_names=input_names,
                              output_names=output_names, opset_version=opset, dynamo=False,
                              dynamic_axes={**dynamic_axes, **(output_axes or {o: {0: "batch"} for o in output_names})})
        info["exporter"] = "torchscript"
        if fallback_reason:
            info["fallback_reason"] = fallback_reason[:300]
    info.update(check(path))
    return info


def _export_dynamo(module: Any, example: tuple, input_names: list[str], output_names: list[str],
                   dynamic_axes: dict[str, dict[int, str]], path: Path, opset: int, max_sequence: int | None,
                   external: bool) -> None:
    import torch
    from torch.export import Dim

    dims: dict[str, Any] = {}
    for axes in dynamic_axes.values():
        for name in axes.values():
            if name not in dims:
                # min=2: an example of size 1 would let torch.export specialise that axis to 1.
                dims[name] = Dim(name, min=2, max=max_sequence) if name == "sequence" and max_sequence else Dim(name)
    shapes = tuple({axis: dims[name] for axis, name in dynamic_axes.get(n, {}).items()} for n in input_names)
    quiet = io.StringIO()
    onnx_logger = logging.getLogger("onnxscript")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(path), input_names=input_names, output_names=output_names,
                              opset_version=opset, dynamo=True, dynamic_shapes=(shapes,), external_data=external,
                              verbose=False)
    finally:
        onnx_logger.setLevel(level)


def check(path: Path) -> dict[str, Any]:
    """onnx.checker on the written file (full check: types and shapes inferred)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError and friends
        raise ExportError(f"export: {path.name} fails onnx.checker ({_first_line(exc)})") from None
    model = onnx.load(str(path), load_external_data=False)
    return {"checker": "passed", "ir_version": int(model.ir_version),
            "onnx_version": onnx.__version__, "producer": f"{model.producer_name} {model.producer_version}".strip()}


def graph_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Input and output names, element types and shapes as the ONNX graph declares them
    (symbolic dimensions by name), for the manifest and for checking it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            out.append({"name": value.name, "dtype": dtype, "shape": shape})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session; `threads` matches PyTorch's for fair latency figures."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _remove_outputs(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".data")):
        leftover.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split())[:200] if text else type(exc).__name__
