"""Training examples cut from token shards: fixed-length blocks with no padding.

Documents were written back to back with a separator token between them, so every block
is full (no compute spent on padding). Masking for MLM is drawn per example from a
generator seeded by (seed, epoch, index): the same example gets the same mask whatever
the worker count, the batch order or an interruption, and a new mask every epoch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class PackedBlocks:
    """Block i is `block` consecutive tokens of one shard (a shard's tail is dropped)."""

    def __init__(self, shards: Sequence[Any], block: int):
        self.shards = list(shards)
        self.block = block
        counts = np.asarray([len(s.tokens) // block for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def tokens(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        offset = (index - int(self.starts[shard])) * self.block
        return np.asarray(self.shards[shard].tokens[offset:offset + self.block], dtype=np.int64)


class CausalBlocks:
    """GPT: each block is both input and (shifted inside the loss) target."""

    def __init__(self, blocks: PackedBlocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.blocks.tokens(index)}


class MaskedBlocks:
    """BERT: [CLS] block [SEP] with 15% of positions chosen for prediction."""

    def __init__(self, blocks: PackedBlocks, tokenizer: Any, mask_prob: float, whole_word: bool, seed: int):
        self.blocks = blocks
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab = len(tokenizer)
        self.special = np.zeros(self.vocab, dtype=bool)
        self.special[tokenizer.all_special_ids] = True
        self.continuation = np.zeros(self.vocab, dtype=bool)
        if whole_word:
            for token, index in tokenizer.get_vocab().items():
                self.continuation[index] = token.startswith("##")
        self.mask_prob = mask_prob
        self.whole_word = whole_word
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        body = self.blocks.tokens(index)
        ids = np.concatenate([[self.cls], body, [self.sep]])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        candidates = ~self.special[ids]
        if self.whole_word:
            word = np.cumsum(~self.continuation[ids])           # word number of each piece
            chosen_words = rng.random(word[-1] + 1) < self.mask_prob
            chosen = chosen_words[word] & candidates
        else:
            chosen = (rng.random(len(ids)) < self.mask_prob) & candidates
        if not chosen.any():  # at least one prediction per example
            chosen[int(rng.choice(np.flatnonzero(candidates)))] = True
        labels = np.where(chosen, ids, -100)
        action = rng.random(len(ids))
        inputs = ids.copy()
        inputs[chosen & (action < 0.8)] = self.mask_id
        swap = chosen & (action >= 0.8) & (action < 0.9)
        inputs[swap] = rng.integers(0, self.vocab, size=int(swap.sum()))
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}


class DocumentCollate:
    """stack_blocks plus each token's document number (for `data.document_mask=true`)."""

    def __init__(self, separator_id: int):
        self.separator_id = separator_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from fmctl.models.document_mask import document_ids

        batch = stack_blocks(items)
        batch["document_ids"] = document_ids(batch["input_ids"], self.separator_id)
        return batch


def stack_blocks(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    batch = {key: torch.stack([torch.as_tensor(it[key]) for it in items]) for key in items[0]}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["num_tokens"] = int(batch["input_ids"].numel())
    return batch
