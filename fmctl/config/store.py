"""Config-group options that are a schema's defaults, given to Hydra from the schemas.

Each default is written once, in its dataclass (fmctl/config/schema.py, a task's own
module). The options that only name a schema — `task=<name>`, `backbone=<name>`,
`trainer=default`, `eval=default`, `optim=adamw`, `sched=<name>`, `customize=[<op>,...]` — are made from
those dataclasses and put in Hydra's ConfigStore before anything is composed, so a
composed config (and the config.yaml a run writes) carries every key with its value,
and a task or backbone registered from outside gets its `task=` / `backbone=` option
without a YAML file. The data options in conf/data/ carry real choices (a built-in
dataset, a file format) on top of `data/_schema`, the DataConfig defaults.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fmctl.config.schema import CUSTOMIZE_OPS, DataConfig, EvalConfig, OptimConfig, SchedConfig, TrainerConfig

DATA_BASE = "_schema"


def schema_options() -> dict[str, dict[str, dict[str, Any]]]:
    """group -> option name -> the option's content."""
    from fmctl import backbones, tasks

    options: dict[str, dict[str, dict[str, Any]]] = {
        "task": {name: _plain(tasks.declaration(name).config(name=name)) for name in tasks.names()},
        "backbone": {name: _plain(backbones.family(name).config(name=name)) for name in backbones.names()},
        "trainer": {"default": _plain(TrainerConfig())},
        "eval": {"default": _plain(EvalConfig())},
        "optim": {"adamw": _plain(OptimConfig())},
        # `constant` is the learning rate held from the first step: no warm-up
        "sched": {"linear": _plain(SchedConfig(name="linear")), "cosine": _plain(SchedConfig(name="cosine")),
                  "constant": _plain(SchedConfig(name="constant", warmup_ratio=0.0))},
        # several ops are chosen at once (customize=[freeze,lora]): each keeps its own key
        "customize": {op: {op: _plain(schema())} for op, schema in CUSTOMIZE_OPS.items()},
        "data": {DATA_BASE: _plain(DataConfig())},
    }
    return options


def register() -> None:
    """Put every schema option into Hydra's ConfigStore (idempotent; call before composing)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, options in schema_options().items():
        for name, node in options.items():
            store.store(group=group, name=name, node=node, provider="fmctl")


def _plain(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
