"""Batching for tasks whose examples carry several sequences (tokens, per-token labels,
decoder inputs, generation prompts) next to fixed-size targets.

Each sequence key is padded to its own longest length in the batch, rounded up to a
multiple of 8 (matrix kernels prefer it), with the pad value given for that key: the
tokenizer's pad id for token ids, -100 for labels the loss must ignore, -1 for "no word
here". Fixed-size lists (multi-hot labels, [start, end] positions) and numbers become
stacked tensors as they are.
"""
from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100  # what torch's cross_entropy skips


class PadCollator:
    """pad_values: key -> pad value for the keys to pad; masks: padded key -> name of the
    attention mask built for it; left: keys padded on the left (decoder-only prompts for
    batched generation, where new tokens must follow the last real one)."""

    def __init__(self, pad_values: dict[str, int], masks: dict[str, str] | None = None,
                 left: frozenset[str] = frozenset(), multiple_of: int = 8, max_width: int | None = None):
        self.pad_values = dict(pad_values)
        self.masks = dict(masks or {"input_ids": "attention_mask"})
        self.left = frozenset(left)
        self.multiple_of = multiple_of
        # Rounding up never goes past this: a GPT's learned positions end at n_positions, and
        # its forward numbers pad positions too, so a padded width past them is an index error.
        self.max_width = max_width

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        for key in items[0]:
            values = [it[key] for it in items]
            if key in self.pad_values:
                padded, mask = self._pad(values, self.pad_values[key], key in self.left)
                batch[key] = padded
                if key in self.masks:
                    batch[self.masks[key]] = mask
            else:
                batch[key] = torch.tensor(values)
        batch["num_tokens"] = sum(len(it["input_ids"]) for it in items)
        return batch

    def _pad(self, values: list[list[int]], pad: int, left: bool) -> tuple[Any, Any]:
        import torch

        longest = max(len(v) for v in values)
        width = -(-max(longest, 1) // self.multiple_of) * self.multiple_of
        if self.max_width is not None:
            width = max(longest, min(width, self.max_width))
        out = torch.full((len(values), width), pad, dtype=torch.long)
        mask = torch.zeros((len(values), width), dtype=torch.long)
        for i, seq in enumerate(values):
            if not seq:
                continue
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            out[i, span] = torch.tensor(seq, dtype=torch.long)
            mask[i, span] = 1
        return out, mask
