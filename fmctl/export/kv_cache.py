"""decoder_with_past.onnx: a causal LM's ONNX graph that takes and returns the attention
keys and values, so generation feeds one new token per step instead of the whole text.

Why a second graph beside model.onnx: model.onnx (full-sequence logits) is what the
parity, int8 and evaluation machinery check like every other export; this one serves
`fmctl predict --prompt` (and any onnxruntime user) for decoding. Inputs: input_ids and
position_ids [batch, sequence], attention_mask [batch, past + sequence], past_key_<i> /
past_value_<i> [batch, heads, past, head_dim] (past 0 for the prompt); outputs: logits
[batch, sequence, vocab] and present_key_<i> / present_value_<i>. It is written with the
torch.export-based exporter: the TorchScript tracer freezes the cache length read as a
Python int inside transformers' mask code, and such a graph is silently wrong for any
other length. It is kept only when greedy decoding through it matches PyTorch's logits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

FILE_NAME = "decoder_with_past.onnx"
PARITY_PROMPTS = 6       # validation rows decoded through the cache for the check
PARITY_STEPS = 8         # tokens each


def layer_count(config: Any) -> int:
    return int(getattr(config, "n_layer", None) or config.num_hidden_layers)


def input_names(layers: int) -> list[str]:
    return ["input_ids", "attention_mask", "position_ids",
            *[f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]]


def output_names(layers: int) -> list[str]:
    return ["logits", *[f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]]


def _wrapper(model: Any) -> Any:
    import torch
    from transformers.cache_utils import DynamicCache

    layers = layer_count(model.config)

    class WithPast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple:
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])

    return WithPast().eval()


def write(model: Any, prompts: list[list[int]], path: Path, opset: int, atol: float) -> dict[str, Any]:
    """Export, reload in onnxruntime and check; returns the manifest's `kv_cache` entry.
    Raises ValueError (with the reason) when the graph does not decode as PyTorch does."""
    import contextlib
    import io
    import warnings

    import torch
    from torch.export import Dim

    from fmctl.export import onnx as onnx_mod

    config = model.config
    layers, heads = layer_count(config), int(getattr(config, "n_head", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "n_embd", None) or config.hidden_size) // heads
    batch, past, new = 2, 3, 4
    example_ids = torch.tensor([p[:new] + [p[0]] * (new - len(p[:new])) for p in (prompts * 2)[:batch]])
    example = (example_ids, torch.ones(batch, past + new, dtype=torch.long),
               torch.arange(past, past + new).expand(batch, new).contiguous(),
               *[torch.zeros(batch, heads, past, head_dim) for _ in range(2 * layers)])
    b, s, p, t = Dim("batch"), Dim("sequence"), Dim("past"), Dim("total")
    shapes = ({0: b, 1: s}, {0: b, 1: t}, {0: b, 1: s}, tuple({0: b, 2: p} for _ in range(2 * layers)))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_wrapper(model), example, str(path), input_names=input_names(layers),
                          output_names=output_names(layers), dynamic_shapes=shapes, opset_version=opset,
                          dynamo=True, external_data=_size(model) > onnx_mod._SINGLE_FILE_LIMIT)

    onnx_mod.check(path)
    worst, agree, total = _decode_parity(model, onnx_mod.session(path), prompts, layers, heads, head_dim)
    if worst > atol:
        raise ValueError(f"greedy decoding through the cache differs from PyTorch by {worst:.3g} > atol {atol:g}")
    return {"file": FILE_NAME, "inputs": input_names(layers), "outputs": output_names(layers),
            "layers": layers, "heads": heads, "head_dim": head_dim,
            "parity": {"prompts": len(prompts), "steps": PARITY_STEPS, "max_abs_diff": worst,
                       "next_token_agreement": agree / max(1, total), "atol": atol,
                       "reference": "PyTorch logits of the whole sequence at every step"}}


def _decode_parity(model: Any, session: Any, prompts: list[list[int]], layers: int, heads: int,
                   head_dim: int) -> tuple[float, int, int]:
    """Greedy decoding with the cache graph, each step's logits against PyTorch's on the
    whole sequence so far (no cache on the reference side)."""
    import numpy as np
    import torch

    worst, agree, total = 0.0, 0, 0
    for prompt in prompts:
        sequence = list(prompt)
        step_ids = np.array([prompt], dtype=np.int64)
        past = [np.zeros((1, heads, 0, head_dim), dtype=np.float32) for _ in range(2 * layers)]
        for _ in range(PARITY_STEPS):
            start = len(sequence) - step_ids.shape[1]
            outputs = session.run(None, step_feed(step_ids, start, past, layers))
            logits, past = outputs[0][0, -1], outputs[1:]
            with torch.no_grad():
                reference = model(input_ids=torch.tensor([sequence])).logits[0, -1].float().numpy()
            worst = max(worst, float(np.abs(reference - logits).max()))
            agree += int(reference.argmax() == logits.argmax())
            total += 1
            sequence.append(int(reference.argmax()))
            step_ids = np.array([[sequence[-1]]], dtype=np.int64)
    return worst, agree, total


def step_feed(ids: Any, start: int, past: list[Any], layers: int) -> dict[str, Any]:
    """One step's inputs: `ids` [rows, new] following `start` tokens already in `past`."""
    import numpy as np

    rows, new = ids.shape
    feed = {"input_ids": ids, "attention_mask": np.ones((rows, start + new), dtype=np.int64),
            "position_ids": np.tile(np.arange(start, start + new, dtype=np.int64), (rows, 1))}
    feed.update(zip(input_names(layers)[3:], past))
    return feed


def _size(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
