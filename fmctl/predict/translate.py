"""Translation with an ONNX export, in onnxruntime, `tokenizers` and numpy (torch is never
imported): greedy decoding with the export's key/value-cache graphs.

The same loop serves `fmctl predict EXPORT --input sources.txt` and the export's own
parity check (fmctl.export.translation), which holds it to PyTorch's greedy translations
token for token. It follows transformers' generate(): a GPT continues `source <sep>`
(prompts padded on the left, positions counted over real tokens, no more new tokens than
its position table leaves after the longest prompt of the batch); a T5 encodes the source
once and decodes from its start token; finished rows are padded until every row has
ended or max_new_tokens is reached.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    """What decoding needs to know about the graphs (the manifest's `decoding`)."""

    decoder_only: bool
    layers: int
    heads: int
    head_dim: int
    eos_id: int
    pad_id: int
    start_id: int | None            # encoder-decoder: the decoder's first token
    max_new_tokens: int
    max_positions: int | None       # decoder-only: the position table's size

    @classmethod
    def from_manifest(cls, decoding: dict[str, Any]) -> "Layout":
        return cls(**{k: decoding[k] for k in cls.__dataclass_fields__})


class GreedyDecoder:
    """prompts (token ids: GPT `source <sep>`, T5 `source </s>`) -> generated ids, each
    cut after its end token; `sessions` holds 'decoder' and, for T5, 'encoder'."""

    def __init__(self, layout: Layout, sessions: dict[str, Any]):
        self.layout, self.sessions = layout, sessions

    def __call__(self, prompts: list[list[int]]) -> list[list[int]]:
        import numpy as np

        ids, mask = _pad(prompts, self.layout.pad_id, left=self.layout.decoder_only)
        step = self._gpt_steps(ids, mask) if self.layout.decoder_only else self._t5_steps(ids, mask)
        rows = len(prompts)
        finished = np.zeros(rows, dtype=bool)
        generated = np.zeros((rows, 0), dtype=np.int64)
        for _ in range(self._room(mask)):
            chosen = step(generated[:, -1:] if generated.shape[1] else None).argmax(-1)
            chosen = np.where(finished, self.layout.pad_id, chosen)
            generated = np.concatenate([generated, chosen[:, None]], axis=1)
            finished |= chosen == self.layout.eos_id
            if finished.all():
                break
        return [_until_end(row.tolist(), self.layout.eos_id) for row in generated]

    def _room(self, mask: Any) -> int:
        limit = self.layout.max_positions
        if not self.layout.decoder_only or not limit:
            return self.layout.max_new_tokens
        return max(1, min(self.layout.max_new_tokens, limit - max(int(mask.sum(1).max()), 1)))

    def _gpt_steps(self, ids: Any, mask: Any) -> Any:
        import numpy as np

        layout, session = self.layout, self.sessions["decoder"]
        state = {"mask": mask, "past": [np.zeros((len(ids), layout.heads, 0, layout.head_dim), np.float32)
                                        for _ in range(2 * layout.layers)]}

        def step(last: Any) -> Any:
            if last is None:
                new, current = ids, state["mask"]
                positions = np.maximum(np.cumsum(current, axis=1) - 1, 0)
                positions = np.where(current == 0, 1, positions)  # as transformers numbers padding
            else:
                new = last
                current = np.concatenate([state["mask"], np.ones((len(ids), 1), np.int64)], axis=1)
                positions = current.sum(1, keepdims=True) - 1
            feed = {"input_ids": new, "attention_mask": current, "position_ids": positions.astype(np.int64)}
            feed.update({f"past_{kind}_{i}": state["past"][2 * i + j] for i in range(layout.layers)
                         for j, kind in enumerate(("key", "value"))})
            outputs = session.run(None, feed)
            state["mask"], state["past"] = current, outputs[1:]
            return outputs[0][:, -1, :]

        return step

    def _t5_steps(self, ids: Any, mask: Any) -> Any:
        import numpy as np

        layout, session = self.layout, self.sessions["decoder"]
        cross = self.sessions["encoder"].run(None, {"input_ids": ids, "attention_mask": mask})
        state = {"past": [np.zeros((len(ids), layout.heads, 0, layout.head_dim), np.float32)
                          for _ in range(2 * layout.layers)]}

        def step(last: Any) -> Any:
            new = np.full((len(ids), 1), layout.start_id, np.int64) if last is None else last
            outputs = session.run(None, decoder_feed(new, mask, state["past"], cross, layout.layers))
            state["past"] = outputs[1:]
            return outputs[0][:, -1, :]

        return step


def decoder_feed(decoder_ids: Any, source_mask: Any, past: list[Any], cross: list[Any], layers: int) -> dict[str, Any]:
    """An encoder-decoder's decoder_with_past feed (fmctl.export.seq2seq_graphs.decoder_names)."""
    feed = {"decoder_input_ids": decoder_ids, "encoder_attention_mask": source_mask}
    for i in range(layers):
        feed.update({f"past_key_{i}": past[2 * i], f"past_value_{i}": past[2 * i + 1],
                     f"cross_key_{i}": cross[2 * i], f"cross_value_{i}": cross[2 * i + 1]})
    return feed


def teacher_forced(layout: Layout, sessions: dict[str, Any], inputs: dict[str, Any]) -> Any:
    """Logits of a whole target at once, through the same graphs (past 0): what the
    parity check compares with PyTorch's forward on the training-style batches."""
    import numpy as np

    if layout.decoder_only:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        feed = {"input_ids": ids, "attention_mask": mask,
                "position_ids": np.tile(np.arange(ids.shape[1], dtype=np.int64), (len(ids), 1))}
        feed.update({f"past_{kind}_{i}": np.zeros((len(ids), layout.heads, 0, layout.head_dim), np.float32)
                     for i in range(layout.layers) for kind in ("key", "value")})
        return sessions["decoder"].run(["logits"], feed)[0]
    source = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    cross = sessions["encoder"].run(None, source)
    rows = len(inputs["input_ids"])
    past = [np.zeros((rows, layout.heads, 0, layout.head_dim), np.float32) for _ in range(2 * layout.layers)]
    feed = decoder_feed(inputs["decoder_input_ids"], inputs["attention_mask"], past, cross, layout.layers)
    return sessions["decoder"].run(["logits"], feed)[0]


def _pad(rows: list[list[int]], pad: int, left: bool) -> tuple[Any, Any]:
    import numpy as np

    width = max(1, max(len(r) for r in rows))
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def _until_end(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


class SourceEncoder:
    """Sources to prompt ids and generated ids to text with the export's tokenizer.json
    (and the decoder's own, target_tokenizer/, when it has one), as the task's translate()
    does with transformers: the prefix, no special tokens, the source cut so that it fits
    max_length with the tokens around it (GPT: then <sep>; T5: then </s>; an
    EncoderDecoderModel: [CLS] before it and [SEP] after it)."""

    def __init__(self, folder: Path, tokenizer_file: str, decoding: dict[str, Any], post: dict[str, Any],
                 max_source: int):
        self.tokenizer = _tokenizer(folder / tokenizer_file)
        target = decoding.get("target_tokenizer_file")
        self.writer = _tokenizer(folder / target) if target else self.tokenizer
        self.prefix = post.get("source_prefix") or ""
        self.decoder_only = bool(decoding["decoder_only"])
        if "source_end_ids" in decoding:
            self.start, self.end = list(decoding["source_start_ids"]), list(decoding["source_end_ids"])
        else:  # exports written before the frame was recorded
            self.start, self.end = [], [int(decoding["eos_id"])]
        if self.decoder_only:
            self.end = [int(decoding["separator_id"])]
        self.max_source = max_source

    def prompts(self, sources: list[str]) -> list[list[int]]:
        encoded = self.tokenizer.encode_batch([self.prefix + s for s in sources], add_special_tokens=False)
        keep = self.max_source if self.decoder_only else self.max_source - len(self.start) - len(self.end)
        return [self.start + e.ids[:keep] + self.end for e in encoded]

    def texts(self, generated: list[list[int]]) -> list[str]:
        return [t.strip() for t in self.writer.decode_batch(generated, skip_special_tokens=True)]


def _tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class OnnxTranslator:
    """predict's target for a translation ONNX export: values {'source': text} -> one
    {'translation': text} each (an empty source is that row's error); `threads` sets
    ONNX Runtime's intra-op threads (predict --threads)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int | None = None):
        from fmctl.export.onnx import session

        decoding = manifest["decoding"]
        self.layout = Layout.from_manifest(decoding)
        sessions = {role: session(folder / name, threads) for role, name in manifest["files"].items()}
        self.decode = GreedyDecoder(self.layout, sessions)
        prep = manifest["preprocessing"]
        self.encoder = SourceEncoder(folder, prep["tokenizer_file"], decoding, manifest.get("postprocessing", {}),
                                     int(prep["max_length"]))

    def __call__(self, values: list[dict[str, Any]]) -> list[Any]:
        sources = [str(v["source"]) for v in values]
        results: list[Any] = ["empty source text" if not s.strip() else None for s in sources]
        kept = [i for i, r in enumerate(results) if r is None]
        if kept:
            generated = self.decode(self.encoder.prompts([sources[i] for i in kept]))
            for i, text in zip(kept, self.encoder.texts(generated)):
                results[i] = {"translation": text}
        return results
