"""Fused LayerNorm, forward and backward, bf16 (or fp32) in and out with fp32 statistics.

One program per row computes mean and reciprocal standard deviation in fp32 and writes
the normalised, scaled, shifted row; the backward recomputes the normalised row from the
saved statistics and writes dx and the row's dweight/dbias contributions, summed over
rows afterwards (deterministic, no atomics).
"""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl


@triton.jit
def _ln_forward(x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, stride, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    centred = tl.where(mask, x - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = centred * rstd * w + b
    tl.store(y_ptr + row * stride + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _ln_backward(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, stride, n_cols,
                 BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    xhat = tl.where(mask, (x - mean) * rstd, 0.0)
    wdy = w * dy
    c1 = tl.sum(xhat * wdy, axis=0) / n_cols
    c2 = tl.sum(wdy, axis=0) / n_cols
    dx = (wdy - (xhat * c1 + c2)) * rstd
    tl.store(dx_ptr + row * stride + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + row * n_cols + cols, dy * xhat, mask=mask)
    tl.store(db_ptr + row * n_cols + cols, dy, mask=mask)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        rows, cols = x2.shape
        y = torch.empty_like(x2)
        mean = torch.empty(rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(cols)
        _ln_forward[(rows,)](x2, y, weight, bias, mean, rstd, x2.stride(0), cols, eps, BLOCK=block)
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple:
        x2, weight, mean, rstd = ctx.saved_tensors
        rows, cols = x2.shape
        dy2 = dy.reshape(rows, cols).contiguous()
        dx = torch.empty_like(x2)
        dw_rows = torch.empty(rows, cols, dtype=torch.float32, device=x2.device)
        db_rows = torch.empty(rows, cols, dtype=torch.float32, device=x2.device)
        _ln_backward[(rows,)](dy2, x2, weight, mean, rstd, dx, dw_rows, db_rows, x2.stride(0), cols,
                              BLOCK=triton.next_power_of_2(cols))
        return (dx.reshape(ctx.shape), dw_rows.sum(0).to(weight.dtype), db_rows.sum(0).to(weight.dtype), None)


def fused_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return _LayerNorm.apply(x, weight, bias, eps)


class FusedLayerNorm(torch.nn.LayerNorm):
    """A drop-in nn.LayerNorm (same parameters and state dict) running the Triton kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.elementwise_affine or self.bias is None or len(self.normalized_shape) != 1:
            return super().forward(x)
        return fused_layer_norm(x, self.weight, self.bias, self.eps)


def patch_layer_norms(model: torch.nn.Module) -> int:
    """Swap every plain nn.LayerNorm for FusedLayerNorm in place; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.LayerNorm:
            module.__class__ = FusedLayerNorm
            count += 1
    return count
