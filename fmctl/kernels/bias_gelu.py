"""Fused bias + GELU (exact erf form or the tanh approximation GPT-2 uses): one pass
reads the matmul output and the bias and writes the activation; the backward recomputes
the activation's derivative from the saved pre-activation."""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

@triton.jit
def _tanh(a):
    return 2.0 / (1.0 + tl.exp(-2.0 * a)) - 1.0


@triton.jit
def _bias_gelu_forward(x_ptr, b_ptr, y_ptr, n_elements, n_cols, TANH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + \
        tl.load(b_ptr + offs % n_cols, mask=mask, other=0.0).to(tl.float32)
    if TANH:
        y = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    else:
        y = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_backward(dy_ptr, x_ptr, b_ptr, dz_ptr, n_elements, n_cols, TANH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + \
        tl.load(b_ptr + offs % n_cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if TANH:
        inner = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        t = _tanh(inner)
        grad = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3 * 0.044715 * z * z)
    else:
        grad = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476)) + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
    tl.store(dz_ptr + offs, dy * grad, mask=mask)


class _BiasGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor, approximate: str) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        block = 1024
        _bias_gelu_forward[(triton.cdiv(n, block),)](x, bias, y, n, bias.numel(), TANH=approximate == "tanh",
                                                     BLOCK=block)
        ctx.save_for_backward(x, bias)
        ctx.approximate = approximate
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple:
        x, bias = ctx.saved_tensors
        dz = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        n = x.numel()
        block = 1024
        _bias_gelu_backward[(triton.cdiv(n, block),)](dy.contiguous(), x, bias, dz, n, bias.numel(),
                                                      TANH=ctx.approximate == "tanh", BLOCK=block)
        return dz.to(x.dtype), dz.reshape(-1, bias.numel()).sum(0).to(bias.dtype), None


def fused_bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(x + bias) with bias broadcast over the last dimension."""
    return _BiasGelu.apply(x, bias, approximate)
