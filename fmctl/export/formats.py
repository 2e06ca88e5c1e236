"""What can be exported for which task, checked before any work.

The formats a task takes are in its declaration (`serving.formats`); a pair missing
there is refused with one line that says which formats the task supports, so a user (or
a later task's author) sees at once what exists. README's task x format table is
`supported_pairs()`.
"""
from __future__ import annotations

from fmctl._suggest import did_you_mean
from fmctl.errors import ExportError

FORMATS = ("onnx", "torchscript", "safetensors", "hf")
QUANTIZATIONS = ("int8", "int8-static")

# format -> quantizations it supports (ONNX Runtime's quantizer)
QUANTIZABLE: dict[str, tuple[str, ...]] = {"onnx": QUANTIZATIONS}


def formats_of(task: str) -> tuple[str, ...]:
    """The formats a task exports to, from its declaration (fmctl.tasks): ONNX and
    TorchScript hold one forward pass with named outputs, checked on real validation
    inputs (a generating task's ONNX export holds its decoding graphs, checked by
    decoding); a task with no deployment use exports its weights (safetensors) or a
    folder its library loads (hf)."""
    from fmctl import tasks

    return tasks.declaration(task).serving.formats


def supported_pairs() -> list[str]:
    from fmctl import tasks

    return [f"{fmt}/{name}" for name in tasks.names() for fmt in formats_of(name)]


def check_supported(fmt: str, task: str, quantize: str | None = None) -> None:
    """Raise ExportError saying which formats the task supports when (fmt, task) is not a pair."""
    from fmctl import tasks

    if task not in tasks.names():
        raise ExportError(f"export: task '{task}' cannot be exported; exportable tasks: {', '.join(tasks.names())}")
    supported = formats_of(task)
    if fmt not in supported:
        hint = did_you_mean(fmt, FORMATS) if fmt not in FORMATS else ""
        raise ExportError(f"export: format '{fmt}' is not supported for task '{task}'{hint}; "
                          f"{task} exports to: {', '.join(supported)}")
    if quantize is not None and quantize not in QUANTIZABLE.get(fmt, ()):
        allowed = [f"{f} --quantize {q}" for f, qs in QUANTIZABLE.items() for q in qs]
        raise ExportError(f"export: --quantize {quantize} is not supported for format '{fmt}'; "
                          f"supported: {', '.join(allowed)}")
    why_not = tasks.declaration(task).serving.not_quantizable
    if quantize is not None and why_not:
        raise ExportError(f"export: --quantize is not supported for task '{task}': {why_not}; export it in fp32")


def folder_name(fmt: str, quantize: str | None) -> str:
    """Default export folder under RUN_DIR/export/: onnx, onnx-int8, torchscript, ..."""
    return fmt if quantize is None else f"{fmt}-{quantize}"
