"""Run a BERT classifier's last block for the [CLS] position alone.

A sequence-level head on BERT (classification, regression, multi-label) reads only the
pooler's input, the last block's output at position 0. Every other position of that block
is computed and thrown away: its query projection, attention output, feed-forward and
their backward, about a fifth of the model's matmul work at four layers. Here the last
block still takes keys and values from every position (the [CLS] output depends on them)
but queries, projects and feeds forward one position. The logits are the same up to float
rounding (tests/test_cls_only.py); training and inference get faster (BENCHMARKS.md).

It is installed as an instance attribute on the encoder, so the module tree, parameter
names and saved files are untouched, and the encoder's current `layer` list is read at
call time (layer dropping and LoRA wrappers keep working). FSDP shards and unshards each
block around the block's own forward, which this bypasses for the last block, so
`full_last_layer` removes it before sharding.
"""
from __future__ import annotations

import types
from typing import Any


def use_cls_only_last_layer(model: Any) -> bool:
    """Install the [CLS]-only last block on a transformers BERT *ForSequenceClassification;
    returns whether it was installed (other families and attention kernels are left as is)."""
    from fmctl.backbones.bert import CLS_ONLY_TYPES

    config = getattr(model, "config", None)
    encoder = getattr(getattr(model, "bert", None), "encoder", None)
    if (config is None or encoder is None or config.model_type not in CLS_ONLY_TYPES or config.is_decoder
            or getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa")
            or not type(model).__name__.endswith("ForSequenceClassification")):
        return False
    encoder.forward = types.MethodType(_encoder_forward, encoder)
    return True


def full_last_layer(model: Any) -> None:
    """Back to transformers' own encoder forward (every position through every block)."""
    encoder = getattr(getattr(model, "bert", None), "encoder", None)
    if encoder is not None and "forward" in vars(encoder):
        del encoder.forward


def _encoder_forward(self: Any, hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
    from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

    kwargs.pop("encoder_attention_mask", None)
    kwargs.pop("cache", None)
    kwargs.pop("use_cache", None)
    for layer in self.layer[:-1]:
        hidden_states = layer(hidden_states, attention_mask, **kwargs)
    return BaseModelOutputWithPastAndCrossAttentions(
        last_hidden_state=_first_position_block(self.layer[-1], hidden_states, attention_mask))


def _first_position_block(layer: Any, hidden_states: Any, attention_mask: Any) -> Any:
    """BertLayer's computation with the query (and all that follows it) at position 0 only."""
    import torch.nn.functional as F

    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    head = attention.attention_head_size
    first = hidden_states[:, :1]
    query = attention.query(first).view(batch, 1, -1, head).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    mask = attention_mask
    if mask is not None and mask.dim() == 4 and mask.shape[2] > 1:
        mask = mask[:, :, :1, :]  # the [CLS] query's row of a (batch, 1, query, key) mask
    if mask is not None and mask.dtype.is_floating_point:
        mask = mask.to(query.dtype)
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scaling,
                                             dropout_p=attention.dropout.p if attention.training else 0.0)
    context = context.transpose(1, 2).reshape(batch, 1, -1)
    attended = layer.attention.output(context, first)
    return layer.feed_forward_chunk(attended)
