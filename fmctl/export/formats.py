"""What can be exported for which task: an explicit table, checked before any work.

A pair missing here is refused with one line that says which formats the task supports,
so a user (or a later task's author) sees at once what exists. README's task x format
table is this table.
"""
from __future__ import annotations

from fmctl._suggest import did_you_mean
from fmctl.errors import ExportError

FORMATS = ("onnx", "torchscript", "safetensors", "hf")
QUANTIZATIONS = ("int8", "int8-static")

# task -> formats it can be exported to. ONNX and TorchScript hold one forward pass with
# named outputs, checked on real validation inputs. A causal LM exports its full-sequence
# logits to ONNX, and fmctl predict decodes around them (no key/value cache); translation
# needs an encoder-decoder or source-conditioned loop, and masked modelling heads have no
# deployment use, so those export their weights (safetensors) or a loadable folder (hf).
_ALL = ("onnx", "torchscript", "safetensors", "hf")
_WEIGHTS = ("safetensors", "hf")
SUPPORTED: dict[str, tuple[str, ...]] = {
    "text_classification": _ALL,
    "image_classification": _ALL,
    "token_classification": _ALL,
    "extractive_qa": _ALL,
    "regression": _ALL,
    "multilabel_classification": _ALL,
    "translation": _WEIGHTS,
    "seq2seq": _WEIGHTS,
    "clm": ("onnx", "safetensors", "hf"),
    "mlm": _WEIGHTS,
    "mim": _WEIGHTS,
}
# format -> quantizations it supports (ONNX Runtime's quantizer)
QUANTIZABLE: dict[str, tuple[str, ...]] = {"onnx": QUANTIZATIONS}
# A quantized model is accepted on the agreement of its predictions; regression has no
# prediction to agree on (its outputs move by design), so it is not quantized.
NOT_QUANTIZABLE_TASKS = {"regression": "a regression output has no label to agree on, so a quantized model "
                                       "could not be checked"}


def supported_pairs() -> list[str]:
    return [f"{fmt}/{task}" for task, formats in SUPPORTED.items() for fmt in formats]


def check_supported(fmt: str, task: str, quantize: str | None = None) -> None:
    """Raise ExportError saying which formats the task supports when (fmt, task) is not a pair."""
    if task not in SUPPORTED:
        raise ExportError(f"export: task '{task}' cannot be exported; exportable tasks: {', '.join(SUPPORTED)}")
    if fmt not in SUPPORTED[task]:
        hint = did_you_mean(fmt, FORMATS) if fmt not in FORMATS else ""
        raise ExportError(f"export: format '{fmt}' is not supported for task '{task}'{hint}; "
                          f"{task} exports to: {', '.join(SUPPORTED[task])}")
    if quantize is not None and quantize not in QUANTIZABLE.get(fmt, ()):
        allowed = [f"{f} --quantize {q}" for f, qs in QUANTIZABLE.items() for q in qs]
        raise ExportError(f"export: --quantize {quantize} is not supported for format '{fmt}'; "
                          f"supported: {', '.join(allowed)}")
    if quantize is not None and task in NOT_QUANTIZABLE_TASKS:
        raise ExportError(f"export: --quantize is not supported for task '{task}': {NOT_QUANTIZABLE_TASKS[task]}; "
                          f"export it in fp32")


def folder_name(fmt: str, quantize: str | None) -> str:
    """Default export folder under RUN_DIR/export/: onnx, onnx-int8, torchscript, ..."""
    return fmt if quantize is None else f"{fmt}-{quantize}"
