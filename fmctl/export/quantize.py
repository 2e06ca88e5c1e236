"""int8 versions of an ONNX graph with ONNX Runtime's quantizer, set for the CPU that runs them.

Dynamic quantization (`int8`, the default) stores weights as int8 and quantizes
activations on the fly, so it needs no data. Static quantization (`int8-static`) also
fixes activation ranges from calibration batches of the run's training split (calibrated
once, then reused by every attempt through ONNX Runtime's calibration cache).

The settings follow ONNX Runtime's own guidance for CPU inference
(onnxruntime.quantization.quantize_static's docstring) for the CPU's int8 path
(fmctl.cpu.int8_path): weights are always per channel (one scale per output column, so
one large column does not flatten the others); on x86 without VNNI the weights use 7 bits
(`reduce_range`), because there ONNX Runtime's u8 x s8 kernel adds pairs of products in
16 bits and full-range weights can saturate them; with VNNI or AMX, and on ARM, the full 8
bits. `--int8-target` picks the settings for another machine than this one (the checks
still run here). Which nodes stay in fp32 is decided by fmctl.export.int8.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from fmctl.errors import ExportError

# Ops whose int8 kernels ONNX Runtime's CPU provider has for static (QDQ) graphs;
# quantizing LayerNorm/Softmax inputs as well loses accuracy for little speed.
STATIC_OPS = ["MatMul", "Gemm", "Conv"]
MODES = ("int8", "int8-static")
# --int8-target: auto is this CPU; the others name a CPU class (fmctl.cpu.int8_path values).
TARGETS = {"auto": None, "vnni": "vnni", "avx2": "u8s8-16bit", "arm": "other"}


@dataclass(frozen=True)
class Int8Settings:
    """The quantizer's settings and why they were chosen (the manifest records both)."""

    int8_path: str                 # the CPU class they are for (fmctl.cpu.int8_path)
    chosen_for: str                # "this CPU" or "--int8-target <name>"
    per_channel: bool
    reduce_range: bool             # 7-bit weights
    weight_type: str               # onnxruntime QuantType names
    activation_type: str
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_for(target: str = "auto", mode: str = "int8") -> Int8Settings:
    """The settings for `target` (auto: the CPU this runs on)."""
    from fmctl import cpu

    if target not in TARGETS:
        raise ExportError(f"export: unknown --int8-target '{target}'; choose one of {', '.join(TARGETS)}")
    path = TARGETS[target] or cpu.int8_path(cpu.flags())
    chosen_for = "this CPU" if TARGETS[target] is None else f"--int8-target {target}"
    if path == "u8s8-16bit":
        return Int8Settings(path, chosen_for, True, True, "QInt8", "QUInt8",
                            "x86 without VNNI: u8 x s8 products are added in pairs in 16 bits, which full-range "
                            "weights can saturate; 7-bit weights cannot")
    if path == "other":
        # ARM kernels prefer symmetric activations (static); dynamic activations are uint8 by construction
        activations = "QInt8" if mode == "int8-static" else "QUInt8"
        return Int8Settings(path, chosen_for, True, False, "QInt8", activations,
                            "no 16-bit pair sums on this architecture: full 8-bit weights")
    return Int8Settings(path, chosen_for, True, False, "QInt8", "QUInt8",
                        f"{path.upper()} sums u8 x s8 products in 32 bits: full 8-bit weights do not saturate")


def prepare(src: Path, workdir: Path) -> tuple[Path, str]:
    """ONNX Runtime's recommended pre-pass (graph optimisation and shape inference), run
    once per graph: every attempt and the node names it excludes refer to its output.
    Symbolic shape inference is skipped: it cannot resolve the dynamic sequence axis."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / f"{src.stem}.pre.onnx"
    try:
        with _quiet():
            quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
        return out, "quant_pre_process (optimised, shapes inferred)"
    except Exception as exc:  # the pre-pass is an optimisation; quantizing without it still works
        return src, f"pre-pass skipped ({type(exc).__name__})"


def candidates(path: Path, mode: str) -> list[tuple[str, str]]:
    """(node name, what it computes) for the nodes the quantizer would make int8: ops it
    quantizes in `mode` that hold a weight (a float initializer of 2 or more dimensions).
    What it computes is named after the model's parameter where the graph keeps it (the
    weight, or the bias added to the node's output), e.g. bert.encoder.layer.3.output.dense."""
    import onnx
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT}
    named = {t.name for t in model.graph.initializer}
    ops = set(STATIC_OPS) if mode == "int8-static" else set(IntegerOpsRegistry)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.name and any(i in weights for i in node.input):
            if node.op_type in ops:
                found.append((node.name, _parameter(node, consumers, named)))
            elif node.op_type == "Gemm" and mode == "int8":
                # dynamic quantization rewrites Gemm as <name>_MatMul + Add before choosing nodes
                found.append((f"{node.name}_MatMul", _parameter(node, consumers, named)))
    return found


def _parameter(node: Any, consumers: dict[str, list[Any]], named: set[str]) -> str:
    """The model parameter a node applies, from initializer names like 'model.x.weight'."""
    around = list(node.input) + [i for out in node.output for c in consumers.get(out, []) if c.op_type == "Add"
                                 for i in c.input]
    for name in around:
        if name in named and "." in name:
            for suffix in (".weight", ".bias"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
            return name.removeprefix("model.")
    return node.op_type


class Calibration:
    """Activation ranges for int8-static, measured once from `feeds()` (numpy feeds of the
    training split) and kept in ONNX Runtime's calibration cache for later attempts."""

    def __init__(self, feeds: Callable[[], Iterable[dict[str, Any]]], cache: Path):
        self.feeds, self.cache, self.examples = feeds, cache, 0

    def reader(self) -> "_Reader | None":
        if self.cache.is_file():
            return None
        reader = _Reader(self.feeds())
        return reader


def quantize(src: Path, dst: Path, mode: str, settings: Int8Settings, exclude: Sequence[str] = (),
             only: Sequence[str] | None = None, calibration: Calibration | None = None) -> None:
    """Write the int8 graph of `src` for `mode` to `dst`, nodes in `exclude` kept in fp32
    (with `only`, just those nodes quantized: how sensitivity is measured)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    common = dict(per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                  weight_type=getattr(QuantType, settings.weight_type), nodes_to_exclude=list(exclude) or None,
                  nodes_to_quantize=list(only) if only is not None else None)
    with _quiet():
        if mode == "int8":
            quantize_dynamic(str(src), str(dst), **common)
        elif mode == "int8-static":
            if calibration is None:
                raise ExportError("export: int8-static needs calibration batches")
            reader = calibration.reader()
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=STATIC_OPS,
                            activation_type=getattr(QuantType, settings.activation_type),
                            calibration_cache_path=str(calibration.cache), **common)
            if reader is not None:
                calibration.examples = reader.examples
        else:
            raise ExportError(f"export: unknown quantization '{mode}'; choose one of {', '.join(MODES)}")


def describe(mode: str, settings: Int8Settings, calibration: Calibration | None) -> dict[str, Any]:
    """The manifest's account of how the graphs were quantized."""
    if mode == "int8":
        info = {"method": "onnxruntime dynamic quantization",
                "weights": f"int8, per channel{', 7-bit (reduce_range)' if settings.reduce_range else ''}",
                "activations": "uint8, ranges computed per batch at run time"}
    else:
        info = {"method": "onnxruntime static quantization (QDQ, MinMax calibration)",
                "weights": f"int8, per channel{', 7-bit (reduce_range)' if settings.reduce_range else ''}",
                "activations": f"{settings.activation_type[1:].lower()}, ranges fixed by calibration",
                "calibration_examples": calibration.examples if calibration else 0, "ops": STATIC_OPS}
    return {**info, "settings": settings.as_dict()}


def file_size(path: Path) -> int:
    """A graph's bytes on disk, its external weights file included."""
    data = path.with_name(path.name + ".data")
    return os.path.getsize(path) + (os.path.getsize(data) if data.is_file() else 0)


class _quiet:
    """The quantizer logs advice through the root logger; keep the export's output to its own lines."""

    def __enter__(self) -> None:
        root = logging.getLogger()
        self.level = root.level
        root.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger().setLevel(self.level)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over our batches (numpy feeds)."""

    def __init__(self, batches: Iterable[dict[str, Any]]):
        self._batches = iter(batches)
        self.examples = 0

    def get_next(self) -> dict[str, Any] | None:
        feed = next(self._batches, None)
        if feed is not None:
            self.examples += len(next(iter(feed.values())))
        return feed
