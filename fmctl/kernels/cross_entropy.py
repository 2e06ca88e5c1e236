"""Fused linear + cross-entropy: the LM head's B x T x V logits are never materialised.

Rows (tokens) are processed in chunks: a chunk's logits are computed with one matmul in
fp32, a Triton kernel turns them in place into the loss and the gradient of the loss with
respect to them (online softmax over vocabulary blocks, two passes), and the gradients of
the hidden states and of the head weight are accumulated chunk by chunk. Peak memory for
the loss is one chunk of logits instead of all of them. ignore_index and label smoothing
follow torch.nn.functional.cross_entropy exactly (mean over the non-ignored targets).
"""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from fmctl.kernels import interpreting


@triton.jit
def _ce_loss_and_grad(logits_ptr, stride, targets_ptr, loss_ptr, count_ptr, n_cols, ignore_index, smoothing,
                      BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    target = tl.load(targets_ptr + row)
    inv_n = 1.0 / tl.load(count_ptr).to(tl.float32)
    if target == ignore_index:
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            tl.store(base + cols, tl.zeros((BLOCK,), dtype=tl.float32), mask=cols < n_cols)
        tl.store(loss_ptr + row, 0.0)
    else:
        running_max = -float("inf")
        running_sum = 0.0
        total = 0.0
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(base + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
            new_max = tl.maximum(running_max, tl.max(z, axis=0))
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
            running_max = new_max
            total += tl.sum(tl.where(cols < n_cols, z, 0.0), axis=0)
        lse = running_max + tl.log(running_sum)
        z_target = tl.load(base + target).to(tl.float32)
        loss = (1.0 - smoothing) * (lse - z_target) + smoothing * (lse - total / n_cols)
        tl.store(loss_ptr + row, loss * inv_n)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            grad = tl.exp(z - lse) - smoothing / n_cols
            grad = tl.where(cols == target, grad - (1.0 - smoothing), grad)
            tl.store(base + cols, grad * inv_n, mask=cols < n_cols)


def _loss_and_grad_(logits: torch.Tensor, targets: torch.Tensor, count: torch.Tensor, ignore_index: int,
                     smoothing: float) -> torch.Tensor:
    """Per-row losses (already divided by the count); `logits` becomes dloss/dlogits."""
    rows, cols = logits.shape
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    block = min(triton.next_power_of_2(cols), 4096 if not interpreting() else 1024)
    _ce_loss_and_grad[(rows,)](logits, logits.stride(0), targets, losses, count, cols, ignore_index, smoothing,
                               BLOCK=block)
    return losses


class FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, ignore_index: int, smoothing: float, chunk: int) -> torch.Tensor:
        count = (targets != ignore_index).sum().clamp(min=1)
        weight_dtype = weight.dtype
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        weight = weight.to(hidden.dtype)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk]
            # Matmuls in the input dtype (bf16 tensor cores, fp32 accumulation inside the
            # GEMM); the softmax and the loss in fp32.
            logits = (h @ weight.t()).float()
            if bias is not None:
                logits += bias.float()
            total += _loss_and_grad_(logits, targets[start:start + chunk].contiguous(), count, ignore_index,
                                     smoothing).sum()
            grad_logits = logits.to(hidden.dtype)
            grad_hidden[start:start + chunk] = grad_logits @ weight
            grad_weight += (grad_logits.t() @ h).float()
            if grad_bias is not None:
                grad_bias += logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias if grad_bias is not None else grad_weight.new_empty(0))
        ctx.has_bias = bias is not None
        ctx.weight_dtype = weight_dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_output.to(torch.float32)
        d_hidden = (grad_hidden.float() * scale).to(grad_hidden.dtype)
        d_weight = (grad_weight * scale).to(ctx.weight_dtype)
        d_bias = (grad_bias * scale).to(ctx.weight_dtype) if ctx.has_bias else None
        return d_hidden, d_weight, d_bias, None, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               bias: torch.Tensor | None = None, ignore_index: int = -100,
                               label_smoothing: float = 0.0, chunk: int = 4096) -> torch.Tensor:
    """mean cross_entropy(hidden @ weight.T + bias, targets) without the full logits.
    hidden: (N, D); weight: (V, D); targets: (N,)."""
    return FusedLinearCrossEntropy.apply(hidden.contiguous(), weight, bias, targets.contiguous(), ignore_index,
                                         float(label_smoothing), chunk)


def reference_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                   bias: torch.Tensor | None = None, ignore_index: int = -100,
                                   label_smoothing: float = 0.0) -> torch.Tensor:
    """The plain PyTorch path (materialises the logits)."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=ignore_index,
                                             label_smoothing=label_smoothing)
