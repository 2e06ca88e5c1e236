"""Customizations: plain functions over a model, applied in the order the config lists.

Each operation is `apply(model, cfg, ctx) -> (model, details)`: it changes the model (or
returns a new one, as LoRA does), and says what it did. `apply_all` records parameters
before/after and the trainable count of every step for the manifest, and collects what
an operation needs later: an extra loss term (distillation), work to do before model/ is
written (merge LoRA, make pruning masks permanent).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from fmctl.config.schema import RunConfig
from fmctl.models.groups import parameter_counts


@dataclass
class Context:
    run: RunConfig
    task: Any
    data: Any
    # loss_hook(loss, outputs, batch) -> loss, for the shared loop (distillation).
    loss_hooks: list[Callable[[Any, Any, Any], Any]] = field(default_factory=list)
    # finalize(model, run_dir) -> model, before model/ is written (merge, remove masks).
    finalizers: list[Callable[[Any, Any], Any]] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)   # ops done so far


@dataclass
class Customized:
    model: Any
    base: Any                 # an untouched copy of the base model, for the report
    records: list[dict[str, Any]]
    ctx: Context

    def loss_hook(self) -> Callable[[Any, Any, Any], Any] | None:
        hooks = list(self.ctx.loss_hooks)
        if not hooks:
            return None

        def combined(loss: Any, outputs: Any, batch: Any) -> Any:
            for hook in hooks:
                loss = hook(loss, outputs, batch)
            return loss

        return combined

    def finalize(self, model: Any, run_dir: Any) -> Any:
        for step in self.ctx.finalizers:
            model = step(model, run_dir)
        return model


def _registry() -> dict[str, Callable[..., Any]]:
    from fmctl.customize import distill, dropout, freeze, head, layers, lora, prune

    return {"freeze": freeze.apply, "lora": lora.apply, "head": head.apply, "dropout": dropout.apply,
            "drop_layers": layers.apply, "prune": prune.apply, "distill": distill.apply}


def apply_all(model: Any, run: RunConfig, task: Any, data: Any, out: Any = None) -> Customized:
    ops = _registry()
    base = copy.deepcopy(model)
    ctx = Context(run=run, task=task, data=data)
    records = []
    for step in run.customize:
        before = parameter_counts(model)
        model, details = ops[step.op](model, step.cfg, ctx)
        after = parameter_counts(model)
        ctx.applied.append(step.op)
        record = {"op": step.op, "params_before": before["total"], "params_after": after["total"],
                  "trainable_before": before["trainable"], "trainable_after": after["trainable"], **details}
        records.append(record)
        if out is not None:
            extra = ", ".join(f"{k} {v}" for k, v in details.items() if isinstance(v, (int, float, str)))
            out.print(f"customize {step.op}: {after['total']:,} parameters, {after['trainable']:,} trainable"
                      + (f" ({extra})" if extra else ""))
    return Customized(model=model, base=base, records=records, ctx=ctx)

