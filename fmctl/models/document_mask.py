"""Attention that stays within each document of a packed row (`data.document_mask=true`).

Pretraining packs documents back to back with a separator after each, so a row usually
holds the end of one document and the start of the next. By default they attend to each
other, as GPT-2 and BERT were trained. With the document mask, each token attends only to
tokens of its own document (and, for a causal model, only to earlier ones), and positions
restart at 0 with each document, so a document is seen as if it were alone in the row.

The collator sends document numbers (cheap, picklable); the mask is built here, in the
form the model's attention kernel expects: an additive float mask for eager attention, a
boolean one for SDPA. transformers passes a 4D mask through untouched.
"""
from __future__ import annotations

from typing import Any


def document_ids(input_ids: Any, separator_id: int) -> Any:
    """Document number of every token: a separator ends its document, so it belongs to it."""
    import torch

    ends = (input_ids == separator_id).long()
    return torch.cumsum(ends, dim=1) - ends


def positions(documents: Any) -> Any:
    """0, 1, 2, ... restarting where the document number changes."""
    import torch

    index = torch.arange(documents.shape[1], device=documents.device).expand_as(documents)
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    first = torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
    return index - first


def attention_inputs(model: Any, documents: Any, causal: bool) -> dict[str, Any]:
    """attention_mask (batch, 1, query, key) and position_ids for the model's forward."""
    import torch

    allowed = documents[:, :, None] == documents[:, None, :]
    if causal:
        length = documents.shape[1]
        allowed &= torch.ones(length, length, dtype=torch.bool, device=documents.device).tril()
    allowed = allowed[:, None]
    if getattr(model.config, "_attn_implementation", "eager") != "sdpa":
        mask = torch.zeros(allowed.shape, dtype=torch.float32, device=documents.device)
        allowed = mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return {"attention_mask": allowed, "position_ids": positions(documents)}
