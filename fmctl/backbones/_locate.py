"""Finding a family's modules inside a model as fmctl meets it: wrapped by peft (LoRA),
DDP or torch.compile, and with transformers' task head around the base model.

The families say where their blocks are (`encoder.layer`, `h`, `blocks`); these helpers
only look through wrappers and test which of the declared paths exist.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def _inner(model: Any) -> Any | None:
    """The model a framework wrapper holds, or None when `model` is no such wrapper."""
    peft = sys.modules.get("peft")  # a PeftModel exists only once peft is imported
    if peft is not None and isinstance(model, peft.PeftModel):
        return model.get_base_model()
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module
    orig = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    return orig if orig is not None and type(model).__name__ == "OptimizedModule" else None


def unwrap(model: Any) -> tuple[Any, str]:
    """(the model inside peft / DDP / torch.compile wrappers, the prefix they put in
    front of its parameter names: 'base_model.model.', 'module.', '_orig_mod.')."""
    prefix = ""
    while True:
        inner = _inner(model)
        if inner is None or inner is model:
            return model, prefix
        path = next(name for name, module in model.named_modules() if module is inner)
        prefix += path + "."
        model = inner


def hf_base(model: Any) -> tuple[Any, str]:
    """(transformers' base model under the task head, its path with a trailing dot):
    `bert.` for BertForSequenceClassification, '' for a bare BertModel or a model whose
    task head sits beside encoder and decoder (T5ForConditionalGeneration)."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    base = getattr(model, prefix, None) if prefix else None
    import torch.nn as nn

    if isinstance(base, nn.Module) and base is not model:
        return base, prefix + "."
    return model, ""


def is_stack(module: Any) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0


def existing(module: Any, candidates: Sequence[str]) -> list[str]:
    """The candidate dotted paths that name a non-empty ModuleList / Sequential."""
    found = []
    for path in candidates:
        try:
            sub = module.get_submodule(path)
        except AttributeError:
            continue
        if is_stack(sub):
            found.append(path)
    return found


def uniform_stack(module: Any) -> str:
    """A structural fallback for architectures a family does not list: the ModuleList or
    Sequential of one child class holding the most parameters ('' when there is none).
    Families call it only after their declared paths found nothing."""
    import torch.nn as nn

    best, best_count = "", -1
    for name, sub in module.named_modules():
        children = list(sub.children()) if isinstance(sub, (nn.ModuleList, nn.Sequential)) else []
        if children and len({type(c) for c in children}) == 1:
            count = sum(p.numel() for p in sub.parameters())
            if count > best_count:
                best, best_count = name, count
    return best
