"""Packed dropout masks (trainer.dropout_masks): torch dropout's distribution and gradient,
seeded by torch's generator, used wherever training calls dropout, and replayed exactly
when activation checkpointing recomputes a block."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fmctl.loop.dropout_masks import dropout_masks, packed_dropout, resolve_dropout_masks
from tests.helpers import compose, finetune
from tests.test_finetune import text_overrides

N = 1_000_003  # not a multiple of the four lanes a 64-bit draw gives


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_scale_and_lane_independence(p):
    torch.manual_seed(0)
    out = packed_dropout(torch.ones(N), p)
    dropped = out == 0
    tolerance = 5 * (p * (1 - p) / N) ** 0.5
    assert abs(dropped.float().mean().item() - p) < tolerance
    assert torch.all(out[~dropped] == 1 / (1 - p))  # kept values scaled, exactly
    assert abs(out.mean().item() - 1) < 3 * tolerance / (1 - p)  # the expectation is kept
    lanes = dropped[: N - N % 4].view(-1, 4).float()
    for lane in range(4):  # each 16-bit lane of a 64-bit draw is uniform (the top one too)
        assert abs(lanes[:, lane].mean().item() - p) < 2 * tolerance
    both = (lanes[:, 0] * lanes[:, 1]).mean().item()  # neighbours drawn from one word are independent
    assert abs(both - p * p) < 2 * tolerance


def test_shape_dtype_gradient_and_seed():
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(3)
    out = packed_dropout(x, 0.25)
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    out.float().sum().backward()
    expected = (out != 0).to(torch.bfloat16) * (1 / 0.75)
    assert torch.equal(x.grad, expected)  # the gradient goes through the same mask
    torch.manual_seed(3)
    assert torch.equal(packed_dropout(x, 0.25), out)
    assert not torch.equal(packed_dropout(x, 0.25), out)  # the generator moved on


def test_the_mode_serves_every_training_dropout_and_nothing_else():
    x = torch.randn(64, 33)
    layer = torch.nn.Dropout(0.2)
    with dropout_masks("packed"):
        torch.manual_seed(1)
        through_module = layer(x)
        torch.manual_seed(1)
        through_function = F.dropout(x, p=0.2, training=True)
        assert torch.equal(F.dropout(x, p=0.2, training=False), x)
        assert torch.equal(F.dropout(x, p=0.0, training=True), x)
        layer.eval()
        assert torch.equal(layer(x), x)
        inplace = x.clone()
        torch.manual_seed(1)
        F.dropout(inplace, p=0.2, training=True, inplace=True)
    torch.manual_seed(1)
    reference = packed_dropout(x, 0.2)
    assert torch.equal(through_module, reference) and torch.equal(through_function, reference)
    assert torch.equal(inplace, reference)
    torch.manual_seed(1)
    assert not torch.equal(F.dropout(x, p=0.2, training=True), reference)  # outside: torch's own masks


def test_auto_is_packed_on_cpu_without_checkpointing():
    """Activation checkpointing recomputes blocks outside the mode, with torch's masks; the
    gradients would then belong to other masks than the forward pass drew."""
    assert resolve_dropout_masks("auto", "cpu") == "packed"
    assert resolve_dropout_masks("auto", "cuda") == "torch"
    assert resolve_dropout_masks("auto", "cpu", checkpointing=True) == "torch"
    assert resolve_dropout_masks("torch", "cpu") == "torch"


def test_packed_masks_with_checkpointing_are_refused(reviews):
    from fmctl.errors import ConfigError

    compose("text_csv", [*text_overrides(reviews), "trainer.gradient_checkpointing=true"])
    with pytest.raises(ConfigError, match="trainer.dropout_masks: 'packed' masks are not redrawn"):
        compose("text_csv", [*text_overrides(reviews), "trainer.gradient_checkpointing=true",
                             "trainer.dropout_masks=packed"])


def test_a_run_records_its_masks_and_learns_with_either(reviews, tmp_path):
    results = {name: finetune("text_csv", [*text_overrides(reviews), f"trainer.dropout_masks={name}"],
                              tmp_path / name) for name in ("packed", "torch")}
    for name, result in results.items():
        manifest = json.loads((result.run_dir / "manifest.json").read_text())
        assert manifest["dropout_masks"] == name
        assert result.metrics["val/accuracy"] >= 0.7, (name, result.metrics)
    # different masks, so not the same numbers, but the same learning within noise
    gap = abs(results["packed"].metrics["val/accuracy"] - results["torch"].metrics["val/accuracy"])
    assert gap <= 0.15, {n: r.metrics for n, r in results.items()}
