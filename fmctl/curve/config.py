"""The settings of a learning curve, and how its command line splits into them, the
fine-tuning overrides every cell shares, and Hydra's own words (launchers)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from fmctl.config.schema import bounded


@dataclass
class CurveConfig:
    # The fine-tuning every cell runs (recipe=NAME or a YAML file); each cell is this recipe
    # with the words the curve does not take, its start, its budget and its seed.
    recipe: str = "bert_topics"
    # Labelled training examples per cell: numbers, or `all`; drawn per class in
    # proportion, nested and seeded (data.label_budget, data.label_budget_seed).
    budgets: list[str] = field(default_factory=lambda: ["50", "200", "1000", "all"])
    # `scratch` (the recipe's backbone at random init) and pretrained model folders or run
    # folders (backbone.pretrained=...), one line each in the plot.
    starts: list[str] = field(default_factory=lambda: ["scratch"])
    # Seeds 0..seeds-1: the budget's sample and trainer.seed; the spread is over them.
    seeds: int = bounded(2, ge=1)
    # Folder of the curve (cells/<cell>/ are run folders); null: runs/learning_curve/<recipe>.
    # The same folder again re-uses every finished cell.
    out: Optional[str] = None


CURVE_KEYS = tuple(f.name for f in dataclasses.fields(CurveConfig))
# Words for one kind of start: scratch.optim.lr=1e-3 sets optim.lr for the scratch start,
# pretrained.optim.lr=5e-5 for every pretrained one (a model at random init usually
# wants a larger learning rate than a pretrained one).
START_PREFIXES = ("scratch.", "pretrained.")


@dataclass
class Words:
    curve: list[str]        # key=value words of CurveConfig
    finetune: list[str]     # overrides every cell gets
    hydra: list[str]        # hydra/launcher=..., hydra.launcher.n_jobs=...
    launch: dict[str, Any]  # --nproc and friends, as parse_invocation reads them
    scratch: list[str] = field(default_factory=list)      # overrides of the scratch start only
    pretrained: list[str] = field(default_factory=list)   # overrides of every pretrained start


def split_words(args: list[str]) -> Words:
    """Curve keys go to CurveConfig (recipe= to both), scratch.* and pretrained.* words to
    those starts, hydra words to Hydra, the rest to every cell's fine-tuning; torchrun
    flags are read as `fmctl finetune` reads them."""
    from fmctl.config.compose import parse_invocation

    own = {prefix: [a[len(prefix):] for a in args if a.startswith(prefix)] for prefix in START_PREFIXES}
    args = [a for a in args if not a.startswith(START_PREFIXES)]
    parsed = parse_invocation([a for a in args if a.split("=", 1)[0] not in CURVE_KEYS or a.startswith("recipe=")])
    curve = [a for a in args if a.split("=", 1)[0] in CURVE_KEYS]
    if parsed.hydra_flags:
        from fmctl.errors import ConfigError

        raise ConfigError(f"{parsed.hydra_flags[0]}: not taken by learning-curve (it runs its cells as a sweep "
                          f"itself; launchers are chosen with hydra/launcher=...)")
    hydra = [w for w in parsed.overrides if w.lstrip("+").startswith("hydra")]
    finetune = [w for w in parsed.overrides if not w.lstrip("+").startswith("hydra")]
    return Words(curve, finetune, hydra, parsed.launch, own["scratch."], own["pretrained."])
