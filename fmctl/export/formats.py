"""What can be exported for which task: an explicit table, checked before any work.

A pair missing here is refused with one line that lists every supported pair, so a user
(or a later task's author) sees at once what exists.
"""
from __future__ import annotations

from fmctl._suggest import did_you_mean
from fmctl.errors import ExportError

FORMATS = ("onnx", "torchscript", "safetensors", "hf")
QUANTIZATIONS = ("int8", "int8-static")

# task -> formats it can be exported to
SUPPORTED: dict[str, tuple[str, ...]] = {
    "text_classification": ("onnx", "torchscript", "safetensors", "hf"),
    "image_classification": ("onnx", "torchscript", "safetensors", "hf"),
}
# format -> quantizations it supports (ONNX Runtime's quantizer)
QUANTIZABLE: dict[str, tuple[str, ...]] = {"onnx": QUANTIZATIONS}


def supported_pairs() -> list[str]:
    return [f"{fmt}/{task}" for task, formats in SUPPORTED.items() for fmt in formats]


def check_supported(fmt: str, task: str, quantize: str | None = None) -> None:
    """Raise ExportError naming the supported format/task pairs when (fmt, task) is not one."""
    if fmt not in SUPPORTED.get(task, ()):
        hint = did_you_mean(fmt, FORMATS) if fmt not in FORMATS else ""
        raise ExportError(f"export: format '{fmt}' is not supported for task '{task}'{hint}; "
                          f"supported format/task pairs: {', '.join(supported_pairs())}")
    if quantize is not None and quantize not in QUANTIZABLE.get(fmt, ()):
        allowed = [f"{f} --quantize {q}" for f, qs in QUANTIZABLE.items() for q in qs]
        raise ExportError(f"export: --quantize {quantize} is not supported for format '{fmt}'; "
                          f"supported: {', '.join(allowed)}")


def folder_name(fmt: str, quantize: str | None) -> str:
    """Default export folder under RUN_DIR/export/: onnx, onnx-int8, torchscript, ..."""
    return fmt if quantize is None else f"{fmt}-{quantize}"
