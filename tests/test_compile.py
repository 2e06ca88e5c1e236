"""trainer.compile: the compiled training forward computes what the eager one does, over
batches of changing length, and falls back to torch's dropout masks."""
from __future__ import annotations

import json

import pytest

from tests.helpers import compose, finetune
from tests.test_finetune import text_overrides

STEPS = ["trainer.max_steps=12", "trainer.eval_every=12", "trainer.precision=fp32", "backbone.dropout=0"]


def test_compiled_run_matches_the_eager_one(reviews, tmp_path):
    runs = {flag: finetune("text_csv", [*text_overrides(reviews), *STEPS, f"trainer.compile={flag}"], tmp_path / flag)
            for flag in ("false", "true")}
    eager, compiled = runs["false"], runs["true"]
    assert compiled.metrics["val/loss"] == pytest.approx(eager.metrics["val/loss"], rel=1e-3)
    assert compiled.metrics["val/accuracy"] == pytest.approx(eager.metrics["val/accuracy"], abs=0.02)
    manifest = json.loads((compiled.run_dir / "manifest.json").read_text())
    assert manifest["dropout_masks"] == "torch"  # auto: inductor fuses its own dropout


def test_packed_masks_are_refused_under_compile(reviews):
    from fmctl.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.dropout_masks: 'packed' masks are not traced by torch.compile"):
        compose("text_csv", [*text_overrides(reviews), "trainer.compile=true", "trainer.dropout_masks=packed"])
