"""A model's outputs as plain tensors, whichever library built it.

timm models (and fmctl's own modules) return a tensor or a tuple; transformers models
return a ModelOutput whose fields are read by name (`logits`, `start_logits`, ...). The
verbs that call an image model (training, export, predict) read it through here, so a
ViT and a CvT are served alike."""
from __future__ import annotations

from typing import Any


def named_outputs(result: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """`result` as a tuple of tensors in `names` order: a tensor or a tuple as it is, any
    other object (a transformers ModelOutput, a namespace) read by name."""
    if isinstance(result, (tuple, list)):
        return tuple(result)
    if hasattr(result, "shape"):
        return (result,)
    return tuple(getattr(result, name) for name in names)


def logits(result: Any) -> Any:
    """The logits of a classifier's output (a tensor, or a ModelOutput's `logits`)."""
    return named_outputs(result, ("logits",))[0]
