"""The length check against a backbone's position table, before the first step.

Why: a pretrained checkpoint brings its own position table (GPT-2's n_positions, a
RoBERTa's 514 minus its padding offset), and data.max_length is checked against
backbone.max_positions only; a longer sequence then fails as an index error in the first
step, after the run folder was made. The family says how long its table is (None when it
has none, as T5's relative positions and ViT)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fmctl.errors import ModelError

if TYPE_CHECKING:
    from fmctl.backbones.base import BackboneFamily


def check_positions(family: BackboneFamily | str, model: Any, needs: Iterable[tuple[str, str, int]],
                    pretrained: str | None = None) -> None:
    """Raise ModelError for the first (config key, how the length is summed, length) of
    `needs` that exceeds the family's position table. `how` is '' for a plain setting or
    'a + b = ' for a sum of settings; `pretrained` names the checkpoint in the message."""
    if isinstance(family, str):
        from fmctl.backbones import family as family_named

        family = family_named(family)
    table = family.position_table(model)
    if table is None:
        return
    where = f"the pretrained '{pretrained}'" if pretrained else "the model"
    for key, sum_text, length in needs:
        if length > table:
            raise ModelError(f"{key}: {sum_text}{length} exceeds the {table} positions of {where}; "
                             f"lower {'it' if not sum_text else 'them'}")
