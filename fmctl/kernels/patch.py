"""Put the fused kernels into a model: LayerNorms are swapped in place (same parameters,
same state dict, so checkpoints and model/ are unchanged), and the bias + GELU of the
feed-forward blocks of BERT, GPT-2 and timm ViT are fused where the structure allows."""
from __future__ import annotations

import types
from typing import Any

import torch.nn.functional as F

from fmctl.kernels.bias_gelu import fused_bias_gelu
from fmctl.kernels.layernorm import patch_layer_norms

_TANH_ACTS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}


def apply(model: Any) -> dict[str, int]:
    report = {"layer_norms": patch_layer_norms(model), "bias_gelu": 0}
    config = getattr(model, "config", None)
    act = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None)
    for module in model.modules():
        name = type(module).__name__
        if name == "BertIntermediate" and act in ("gelu", *_TANH_ACTS):
            module.forward = types.MethodType(_bert_intermediate(_approximate(act)), module)
        elif name == "GPT2MLP" and act in ("gelu", *_TANH_ACTS):
            module.forward = types.MethodType(_gpt2_mlp(_approximate(act)), module)
        elif name == "Mlp" and type(getattr(module, "act", None)).__name__ == "GELU" and hasattr(module, "fc1"):
            module.forward = types.MethodType(_timm_mlp(getattr(module.act, "approximate", "none")), module)
        else:
            continue
        report["bias_gelu"] += 1
    return report


def _approximate(act: str) -> str:
    return "tanh" if act in _TANH_ACTS else "none"


def _bert_intermediate(approximate: str):
    def forward(self, hidden_states):
        return fused_bias_gelu(F.linear(hidden_states, self.dense.weight), self.dense.bias, approximate)
    return forward


def _gpt2_mlp(approximate: str):
    def forward(self, hidden_states):
        pre = hidden_states @ self.c_fc.weight  # GPT-2's Conv1D stores the weight as (in, out)
        return self.dropout(self.c_proj(fused_bias_gelu(pre, self.c_fc.bias, approximate)))
    return forward


def _timm_mlp(approximate: str):
    def forward(self, x):
        x = fused_bias_gelu(F.linear(x, self.fc1.weight), self.fc1.bias, approximate)
        return self.drop2(self.fc2(self.norm(self.drop1(x))))
    return forward
