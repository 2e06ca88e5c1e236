"""Does the model hold the sequences the task will feed it?

Why: a pretrained checkpoint brings its own position table (GPT-2's n_positions, a
RoBERTa's 514 minus its padding offset), and the config is checked against
backbone.max_positions only; a longer sequence would fail as an index error in the first
step, after the run folder was made. The lengths come from the task's declaration (a GPT
translation needs source + separator + target), the table from the backbone family
(`position_table`: None for T5's relative positions and for image models)."""
from __future__ import annotations

from typing import Any

from fmctl.config.schema import RunConfig
from fmctl.errors import ModelError


def check_positions(run: RunConfig, model: Any, lengths: list[Any]) -> None:
    """Raise ModelError naming the setting to lower when a needed length exceeds the table."""
    from fmctl.backbones import family

    table = family(run.backbone.name).position_table(model)
    if table is None:
        return
    where = f"the pretrained '{run.backbone.pretrained}'" if run.backbone.pretrained else "the model"
    for need in lengths:
        if need.length > table:
            formula = f"{need.formula} = " if need.formula else ""
            raise ModelError(f"{need.key}: {formula}{need.length} exceeds the {table} positions of {where}; "
                             f"lower {'them' if need.formula else 'it'}")
