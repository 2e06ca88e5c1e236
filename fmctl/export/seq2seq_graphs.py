"""The graphs a translation model is served with: encoder.onnx and decoder_with_past.onnx
for an encoder-decoder (T5, BART-likes, an EncoderDecoderModel of a BERT encoder and a
BERT or GPT-2 decoder), decoder_with_past.onnx alone for a decoder-only
GPT (fmctl.export.kv_cache, as clm exports write it).

encoder.onnx reads the source (input_ids, attention_mask [batch, source]) and returns,
for every decoder layer, the keys and values its cross-attention reads
(cross_key_<i> / cross_value_<i> [batch, heads, source, head_dim]): they depend on the
source only, so they are computed once per source instead of once per generated token.
They are taken from the model's own first decoder step (transformers fills the
cross-attention cache there), so no per-architecture projection code is written here;
the rest of that step is not an output and the exporter drops it.

decoder_with_past.onnx reads decoder_input_ids [batch, sequence] (the start token, then
one new token a step; the whole target for a teacher-forced check),
encoder_attention_mask [batch, source], past_key_<i> / past_value_<i> (self-attention
cache, [batch, heads, past, head_dim], past 0 at the first step) and the cross keys and
values, and returns logits [batch, sequence, vocab] and present_key_<i> /
present_value_<i>. Both are written with the torch.export-based exporter (the tracer
would freeze the cache length) under eager attention (SDPA's graph does not export with
dynamic lengths); fmctl.export.translation keeps them only when greedy translations
through them are PyTorch's.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder_with_past.onnx"


def shape(config: Any) -> tuple[int, int, int]:
    """Decoder layers, attention heads and the width of one head: T5's and BART's own
    keys, or an EncoderDecoderModel's decoder config (BERT's or GPT-2's keys)."""
    decoder = getattr(config, "decoder", None)
    if decoder is not None and not isinstance(decoder, (int, bool)):  # EncoderDecoderConfig
        layers = int(getattr(decoder, "num_hidden_layers", None) or decoder.n_layer)
        heads = int(getattr(decoder, "num_attention_heads", None) or decoder.n_head)
        width = int(getattr(decoder, "hidden_size", None) or decoder.n_embd)
        return layers, heads, width // heads
    layers = int(getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
                 or config.num_layers)
    heads = int(getattr(config, "num_heads", None) or config.decoder_attention_heads)
    head_dim = int(getattr(config, "d_kv", None) or config.d_model // heads)
    return layers, heads, head_dim


def encoder_names(layers: int) -> tuple[list[str], list[str]]:
    return ["input_ids", "attention_mask"], [f"cross_{k}_{i}" for i in range(layers) for k in ("key", "value")]


def decoder_names(layers: int) -> tuple[list[str], list[str]]:
    inputs = ["decoder_input_ids", "encoder_attention_mask",
              *[f"{k}_{i}" for i in range(layers) for k in ("past_key", "past_value", "cross_key", "cross_value")]]
    return inputs, ["logits", *[f"present_{k}_{i}" for i in range(layers) for k in ("key", "value")]]


def _cache_keyword(model: Any) -> str:
    """transformers 5 renames forward's `past_key_values` to `cache` (the old name warns)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _encoder(model: Any) -> Any:
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple:
            hidden = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            start = torch.full((input_ids.shape[0], 1), self.model.config.decoder_start_token_id, dtype=torch.long)
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            out = self.model(encoder_outputs=(hidden,), attention_mask=attention_mask, decoder_input_ids=start,
                             use_cache=True, **{_cache_keyword(self.model): cache})
            return tuple(t for layer in out.past_key_values.cross_attention_cache.layers
                         for t in (layer.keys, layer.values))

    return Encoder().eval()


def _decoder(model: Any, layers: int) -> Any:
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, decoder_input_ids: Any, encoder_attention_mask: Any, *caches: Any) -> tuple:
            own, cross = DynamicCache(), DynamicCache()
            for i in range(layers):
                own.update(caches[4 * i], caches[4 * i + 1], i)
                cross.update(caches[4 * i + 2], caches[4 * i + 3], i)
            cache = EncoderDecoderCache(own, cross)
            for i in range(layers):
                cache.is_updated[i] = True  # cross-attention reads the given keys and values
            # The encoder's states are not read once the cross keys and values are cached;
            # the decoder still wants a tensor of [batch, source] to size its mask by.
            placeholder = encoder_attention_mask[:, :, None].to(torch.float32)
            out = self.model(encoder_outputs=(placeholder,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=decoder_input_ids, use_cache=True, **{_cache_keyword(self.model): cache})
            present = out.past_key_values.self_attention_cache.layers
            return (out.logits, *[t for layer in present for t in (layer.keys, layer.values)])

    return Decoder().eval()


def write_encoder_decoder(model: Any, prompts: list[list[int]], folder: Path, opset: int) -> dict[str, Any]:
    """encoder.onnx and decoder_with_past.onnx in `folder`; returns the manifest's graph entries."""
    import torch
    from torch.export import Dim

    from fmctl.export import onnx as onnx_mod

    layers, heads, head_dim = shape(model.config)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        rows = [(p * 3)[:5] for p in (prompts * 2)[:2]]
        ids = torch.tensor(rows)
        mask = torch.ones_like(ids)
        mask[1, -1] = 0  # padding present, so the mask is not specialised away
        batch, source = Dim("batch"), Dim("source")
        names_in, names_out = encoder_names(layers)
        _export(_encoder(model), (ids, mask), folder / ENCODER_FILE, names_in, names_out,
                ({0: batch, 1: source}, {0: batch, 1: source}), opset, model)
        with torch.no_grad():
            cross = _encoder(model)(ids, mask)
        past, new = 3, 2
        caches = []
        for i in range(layers):
            caches += [torch.zeros(2, heads, past, head_dim), torch.zeros(2, heads, past, head_dim),
                       cross[2 * i], cross[2 * i + 1]]
        start = int(model.config.decoder_start_token_id)
        decoder_ids = torch.tensor([[start] * new, [rows[0][0]] * new])
        p, s = Dim("past"), Dim("sequence")
        cache_shapes = tuple(({0: batch, 2: p} if j % 4 < 2 else {0: batch, 2: source}) for j in range(4 * layers))
        names_in, names_out = decoder_names(layers)
        _export(_decoder(model, layers), (decoder_ids, mask, *caches), folder / DECODER_FILE, names_in, names_out,
                ({0: batch, 1: s}, {0: batch, 1: source}, cache_shapes), opset, model)
    finally:
        model.set_attn_implementation(previous)
    checked = {name: onnx_mod.check(folder / name) for name in (ENCODER_FILE, DECODER_FILE)}
    return {"files": {"encoder": ENCODER_FILE, "decoder": DECODER_FILE},
            "graphs": {"encoder": onnx_mod.graph_io(folder / ENCODER_FILE),
                       "decoder": onnx_mod.graph_io(folder / DECODER_FILE)},
            "shape": {"layers": layers, "heads": heads, "head_dim": head_dim},
            "onnx": {"exporter": "dynamo", "opset": opset, **checked[DECODER_FILE]}}


def _export(module: Any, example: tuple, path: Path, names_in: list[str], names_out: list[str], shapes: tuple,
            opset: int, model: Any) -> None:
    import torch

    from fmctl.export import onnx as onnx_mod

    size = sum(p.numel() * p.element_size() for p in model.parameters())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=names_in, output_names=names_out,
                          dynamic_shapes=shapes, opset_version=opset, dynamo=True,
                          external_data=size > onnx_mod._SINGLE_FILE_LIMIT)
