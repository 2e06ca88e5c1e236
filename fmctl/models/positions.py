"""Does the model hold the sequences the task will feed it?

Why: a pretrained checkpoint brings its own position table (GPT-2's n_positions, a
RoBERTa's 514 minus its padding offset), and the config is checked against
backbone.max_positions only; a longer sequence would fail as an index error in the first
step, after the run folder was made. The lengths come from the task's declaration (a GPT
translation needs source + separator + target), the table from the built model."""
from __future__ import annotations

from typing import Any

from fmctl.config.schema import RunConfig
from fmctl.errors import ModelError

# Encoders whose learned positions start after the padding index (RoBERTa's embeddings).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                     "roberta-prelayernorm", "ibert", "markuplm", "mpnet"}


def position_table(model: Any) -> int | None:
    """Positions the model can embed; None for models without an absolute table
    (encoder-decoders with relative positions such as T5, image models)."""
    config = getattr(model, "config", None)
    table = getattr(config, "max_position_embeddings", None) if config is not None else None
    if not isinstance(table, int) or getattr(config, "is_encoder_decoder", False):
        return None
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        table -= (getattr(config, "pad_token_id", None) or 0) + 1
    return table


def check_positions(run: RunConfig, model: Any, lengths: list[Any]) -> None:
    """Raise ModelError naming the setting to lower when a needed length exceeds the table."""
    table = position_table(model)
    if table is None:
        return
    where = f"the pretrained '{run.backbone.pretrained}'" if run.backbone.pretrained else "the model"
    for need in lengths:
        if need.length > table:
            formula = f"{need.formula} = " if need.formula else ""
            raise ModelError(f"{need.key}: {formula}{need.length} exceeds the {table} positions of {where}; "
                             f"lower {'them' if need.formula else 'it'}")
