"""int8 versions of an ONNX model with ONNX Runtime's quantizer.

Dynamic quantization (the default) stores weights as int8 and quantizes activations on
the fly, so it needs no data. Static quantization (`int8-static`) also fixes activation
ranges from calibration batches drawn from the run's training split. Either way the
result goes through the same label-agreement check as any export.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from fmctl.errors import ExportError

# Ops whose int8 kernels ONNX Runtime's CPU provider has; quantizing LayerNorm/Softmax
# inputs as well loses accuracy for little speed.
STATIC_OPS = ["MatMul", "Gemm", "Conv"]


def _preprocessed(src: Path, workdir: Path) -> tuple[Path, str]:
    """ONNX Runtime's recommended pre-pass (graph optimisation and shape inference).
    Symbolic shape inference is skipped: it cannot resolve the dynamic sequence axis."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / "preprocessed.onnx"
    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
        return out, "quant_pre_process (optimised, shapes inferred)"
    except Exception as exc:  # the pre-pass is an optimisation; quantizing without it still works
        return src, f"pre-pass skipped ({type(exc).__name__})"


def quantize(src: Path, dst: Path, mode: str, calibration: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write the int8 model for `mode` ('int8' dynamic or 'int8-static'); returns what the manifest records."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice through the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="fmctl-quant-") as tmp:
            source, pre = _preprocessed(src, Path(tmp))
            if mode == "int8":
                quantize_dynamic(str(source), str(dst), weight_type=QuantType.QInt8)
                info = {"method": "onnxruntime dynamic quantization", "weights": "int8 (symmetric)",
                        "activations": "uint8, ranges computed per batch at run time"}
            elif mode == "int8-static":
                if calibration is None:
                    raise ExportError("export: int8-static needs calibration batches")
                reader = _Reader(calibration)
                quantize_static(str(source), str(dst), reader, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=STATIC_OPS, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=True)
                info = {"method": "onnxruntime static quantization (QDQ, MinMax calibration)",
                        "weights": "int8 per channel", "activations": "uint8, ranges fixed by calibration",
                        "calibration_examples": reader.examples, "ops": STATIC_OPS}
            else:
                raise ExportError(f"export: unknown quantization '{mode}'")
    finally:
        root.setLevel(level)
    info["pre_pass"] = pre
    info["size_bytes"] = os.path.getsize(dst)
    info["fp32_size_bytes"] = os.path.getsize(src)
    return info


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
