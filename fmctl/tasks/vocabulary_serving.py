"""Serving hooks shared by the tasks whose model outputs vocabulary logits at every
position (language modelling, translation): no label names, one `logits` output of
batch x sequence x vocab, and export parity judged by the argmax token over the real
tokens (teacher-forced for translation)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class VocabularyLogitsServing:
    """Mix in before `Task`: these replace the classifier defaults of `fmctl.tasks.base`."""

    def served_label_names(self, model_dir: Path, data: Any) -> list[str]:
        return []

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", "vocab"]}]

    def parity_measure(self) -> Any:
        from fmctl.export.measures import TokenArgmax

        return TokenArgmax(score=False)
