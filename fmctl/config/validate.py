"""Check a composed config against the schemas and return typed objects.

Collects every problem before raising, each as "<dotted.key>: <what is wrong>" with a
"did you mean" for misspelt keys and choices, so a user fixes a config in one pass
instead of one error per run.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from fmctl._suggest import did_you_mean, one_of
from fmctl.config.schema import CUSTOMIZE_OPS, CustomizeStep, RunConfig
from fmctl.data.sources import uses_builtin
from fmctl.errors import ConfigError

MISSING = object()  # a '???' value nobody filled in


def named_schemas(group: str) -> dict[str, type]:
    """backbone and task pick their schema by their `name` key: name -> config dataclass."""
    if group == "backbone":
        from fmctl import backbones

        return {name: backbones.family(name).config for name in backbones.names()}
    from fmctl import tasks

    return {name: tasks.declaration(name).config for name in tasks.names()}


def to_plain(cfg: Any, path: str, problems: list[str]) -> Any:
    """DictConfig -> plain dict/list, resolving interpolations key by key so that one
    broken `${...}` is reported with its key instead of aborting the whole conversion."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        out = {}
        for key in cfg.keys():
            dotted = f"{path}{key}"
            if OmegaConf.is_missing(cfg, key):
                out[key] = MISSING
                continue
            try:
                value = cfg[key]
            except Exception as exc:  # interpolation errors carry omegaconf's own message
                problems.append(f"{dotted}: cannot resolve value ({_first_line(exc)})")
                continue
            out[key] = to_plain(value, dotted + ".", problems)
        return out
    if isinstance(cfg, ListConfig):
        return [to_plain(v, f"{path}[{i}].", problems) for i, v in enumerate(cfg)]
    return cfg


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def validate(cfg: Any) -> RunConfig:
    """Validate a DictConfig or plain mapping; raise ConfigError listing every problem."""
    problems: list[str] = []
    plain = to_plain(cfg, "", problems) if not isinstance(cfg, Mapping) or hasattr(cfg, "_metadata") else dict(cfg)
    problems.extend(_check_pairing(plain))
    run = _build(RunConfig, plain, "", problems)
    if not problems:
        problems.extend(check_semantics(run))
    if problems:
        raise ConfigError(problems)
    return run


def validate_schema(schema: type, cfg: Any, prefix: str = "") -> Any:
    """Validate a mapping against any schema dataclass (verbs with their own config,
    such as `data prepare`); raise ConfigError listing every problem."""
    problems: list[str] = []
    plain = to_plain(cfg, "", problems) if hasattr(cfg, "_metadata") else dict(cfg)
    built = _build(schema, plain, prefix, problems)
    if problems:
        raise ConfigError(problems)
    return built


def _build(schema: type, node: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(node, Mapping):
        problems.append(f"{path.rstrip('.') or 'config'}: expected a mapping of keys, got {_show(node)}")
        return schema()
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in node:
        if key not in fields:
            problems.append(f"{path}{key}: unknown key{did_you_mean(key, fields)}")
    kwargs = {}
    for name, fld in fields.items():
        if name not in node:
            continue
        dotted = f"{path}{name}"
        value = node[name]
        if path == "" and name in ("backbone", "task"):
            kwargs[name] = _build_named(name, value, problems)
            continue
        if path == "" and name == "customize":
            kwargs[name] = build_customize(value, problems)
            continue
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value, dotted + ".", problems)
            continue
        ok, coerced = _coerce(value, hints[name], dotted, problems)
        if ok and not _check_bounds(coerced, fld.metadata, dotted, problems):
            ok = False
        if ok:
            kwargs[name] = coerced
    return schema(**kwargs)


def _build_named(group: str, node: Any, problems: list[str]) -> Any:
    """backbone and task pick their schema by their `name` key."""
    schemas = named_schemas(group)
    default_schema = next(iter(schemas.values()))
    if not isinstance(node, Mapping):
        problems.append(f"{group}: expected a mapping of keys, got {_show(node)}")
        return default_schema()
    name = node.get("name", MISSING)
    if name is MISSING or name is None:
        problems.append(f"{group}.name: required; one of {one_of(schemas)}")
        return default_schema()
    if name not in schemas:
        problems.append(f"{group}.name: unknown {group} '{name}'{did_you_mean(name, schemas)}; "
                        f"choose one of {one_of(schemas)}")
        return default_schema()
    return _build(schemas[name], node, f"{group}.", problems)


def build_customize(node: Any, problems: list[str]) -> list[CustomizeStep]:
    """The ordered operations: a mapping op -> settings (what `customize=[freeze,lora]`
    composes from conf/customize/, keys in the listed order) or a list whose items are op
    names or mappings with an `op` key (`customize=[freeze,{op:prune,sparsity:0.5}]`)."""
    if node is None:
        return []
    if isinstance(node, Mapping):
        items = [(name, settings, f"customize.{name}") for name, settings in node.items()]
    elif isinstance(node, (list, tuple)):
        items = []
        for i, item in enumerate(node):
            if isinstance(item, str):
                items.append((item, {}, f"customize[{i}]"))
            elif isinstance(item, Mapping):
                settings = {k: v for k, v in item.items() if k != "op"}
                items.append((item.get("op", MISSING), settings, f"customize[{i}]"))
            else:
                problems.append(f"customize[{i}]: expected an operation name or a mapping with 'op', got {_show(item)}")
    else:
        problems.append(f"customize: expected a list of operations, got {_show(node)}")
        return []
    steps = []
    for name, settings, key in items:
        if name is MISSING or name not in CUSTOMIZE_OPS:
            shown = "missing" if name is MISSING else f"unknown operation {_show(name)}{did_you_mean(str(name), CUSTOMIZE_OPS)}"
            problems.append(f"{key}{'.op' if name is MISSING else ''}: {shown}; choose from {one_of(CUSTOMIZE_OPS)}")
            continue
        steps.append(CustomizeStep(name, _build(CUSTOMIZE_OPS[name], settings or {}, f"{key}.", problems)))
    return steps


def _coerce(value: Any, hint: Any, key: str, problems: list[str]) -> tuple[bool, Any]:
    if value is MISSING:
        problems.append(f"{key}: required value is missing (set {key}=...)")
        return False, None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, problems) if len(inner) == 1 else (True, value)
    if value is None:
        problems.append(f"{key}: must not be null")
        return False, None
    if origin is Literal:
        if value in args:
            return True, value
        problems.append(f"{key}: expected one of {one_of(args)}, got {_show(value)}{did_you_mean(value, args)}")
        return False, None
    if origin is list:
        if isinstance(value, str):  # key=one_value where a list is expected
            value = [value]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {_show(value)}")
            return False, None
        items = [_coerce(v, args[0], f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return all(ok for ok, _ in items), [v for _, v in items]
    if hint is bool:
        if isinstance(value, bool):
            return True, value
        problems.append(f"{key}: expected true or false, got {_show(value)}")
        return False, None
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        problems.append(f"{key}: expected an integer, got {_show(value)}")
        return False, None
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        problems.append(f"{key}: expected a number, got {_show(value)}")
        return False, None
    if hint is str:
        if isinstance(value, str):
            return True, value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        problems.append(f"{key}: expected a string, got {_show(value)}")
        return False, None
    return True, value


def _check_bounds(value: Any, meta: Mapping, key: str, problems: list[str]) -> bool:
    if value is None or not meta:
        return True
    checks = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
              "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    failed = [f"{sym} {meta[name]}" for name, (ok, sym) in checks.items() if name in meta and not ok(value, meta[name])]
    if failed:
        problems.append(f"{key}: must be {' and '.join(failed)}, got {value}")
        return False
    return True


def _check_pairing(plain: Any) -> list[str]:
    """Task and backbone must fit; checked first because a wrong pairing also makes the
    backbone's other keys look wrong."""
    from fmctl import tasks

    try:
        task, backbone = plain["task"]["name"], plain["backbone"]["name"]
    except (KeyError, TypeError):
        return []
    if task not in tasks.names() or backbone not in named_schemas("backbone"):
        return []
    accepted = tasks.declaration(task).backbones
    if backbone not in accepted:
        pairs = ", ".join(f"{t}+{'/'.join(tasks.declaration(t).backbones)}" for t in tasks.names())
        return [f"backbone: task '{task}' needs backbone {' or '.join(accepted)}, "
                f"got '{backbone}' (set backbone={accepted[0]}; valid pairs: {pairs})"]
    return []


def check_semantics(run: RunConfig) -> list[str]:
    """Rules that involve several keys; the task's own rules come from its declaration."""
    from fmctl import backbones, tasks

    declared = tasks.declaration(run.task.name)
    problems = list(backbones.family(run.backbone.name).checks(run))
    builtin = uses_builtin(run.data)
    if declared.reads == "files" and run.data.train is None and not builtin:
        fitting = [f"data={name}" for name in declared.builtin_data]
        problems.append("data.train: required; give a training file or folder (data.train=PATH)"
                        + (f" or a built-in dataset ({' or '.join(fitting)})" if fitting else ""))
    if builtin and run.data.builtin not in declared.builtin_data:
        problems.append(f"data.builtin: '{run.data.builtin}' does not fit task '{run.task.name}'; "
                        f"{_own_data_hint(run.task.name)}")
    if declared.checks is not None:
        problems.extend(declared.checks(run))
    problems.extend(_check_lengths(run, declared))
    betas = list(run.optim.betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        problems.append(f"optim.betas: expected two numbers in [0, 1) (Adam's moment decays, e.g. [0.9,0.999]), "
                        f"got {betas}")
    if run.trainer.dropout_masks == "packed" and run.trainer.gradient_checkpointing:
        problems.append("trainer.dropout_masks: 'packed' masks are not redrawn when gradient checkpointing "
                        "recomputes a block; use trainer.dropout_masks=auto (torch's masks under checkpointing)")
    if run.trainer.dropout_masks == "packed" and run.trainer.compile:
        problems.append("trainer.dropout_masks: 'packed' masks are not traced by torch.compile, which fuses its "
                        "own dropout; use trainer.dropout_masks=auto with trainer.compile=true")
    if run.trainer.compile and run.trainer.strategy == "fsdp" and run.trainer.nproc > 1:
        problems.append("trainer.compile: not supported with trainer.strategy=fsdp; use strategy=ddp or "
                        "trainer.compile=false")
    if run.trainer.resume is not None and run.overwrite:
        problems.append("overwrite: cannot be combined with trainer.resume (resuming continues the run folder; "
                        "overwriting would delete it)")
    if run.trainer.monitor_mode is not None and run.trainer.monitor is None:
        problems.append("trainer.monitor_mode: set trainer.monitor too (e.g. trainer.monitor=val/loss)")
    if run.trainer.ema.decay is not None and run.trainer.strategy == "fsdp" and run.trainer.nproc > 1:
        problems.append("trainer.ema.decay: not supported with trainer.strategy=fsdp (the averaged weights would be "
                        "sharded); use ddp or one process")
    problems.extend(_check_customize(run))
    return problems


def _check_customize(run: RunConfig) -> list[str]:
    problems = []
    names = [step.op for step in run.customize]
    for i, step in enumerate(run.customize):
        key = f"customize.{step.op}"
        if names.count(step.op) > 1:
            problems.append(f"{key}: listed {names.count(step.op)} times; list each operation once")
            break
        cfg = step.cfg
        if step.op == "drop_layers":
            if all(getattr(cfg, k) is None for k in ("keep", "every", "bottom")):
                problems.append(f"{key}: set keep=[i,j,...], bottom=K or every=K")
            if cfg.keep is not None and (not cfg.keep or min(cfg.keep) < 0 or len(set(cfg.keep)) != len(cfg.keep)):
                problems.append(f"{key}.keep: needs distinct block indices >= 0, got {cfg.keep}")
        if step.op == "distill" and not cfg.teacher:
            problems.append(f"{key}.teacher: required; the run folder of a model trained on the same labels")
        if step.op == "freeze" and not (cfg.params or cfg.embeddings or cfg.bottom):
            problems.append(f"{key}: nothing to freeze; set params=[glob,...], embeddings=true or bottom=K")
    problems.extend(_check_prune(run.customize, names, run.backbone.name))
    from fmctl import tasks

    declared = tasks.declaration(run.task.name)
    if names and not declared.customize:
        supported = [d.name for d in tasks.declarations() if d.customize]
        problems.append(f"customize: task '{run.task.name}' is not supported; customize runs of "
                        f"{', '.join(supported)}")
    if "distill" in names and not declared.distill:
        problems.append(f"customize.distill: needs a classification task, got '{run.task.name}'")
    if "head" in names and not declared.task_head:
        problems.append(f"customize.head: task '{run.task.name}' has no task head over the backbone to re-initialise "
                        f"or replace (its output layer is the model's own); drop head from customize")
    return problems


def _check_prune(steps: list[Any], names: list[str], backbone: str) -> list[str]:
    """prune with something to do; with lora, before it and structural only. Why: LoRA
    then adapts the smaller model and its merge is exact, while a merge would fill
    weights that sparsity or zeroed heads set to zero back in with the adapter's update.
    Heads are structural where the backbone family declares head removal (T5)."""
    from fmctl import backbones

    if "prune" not in names:
        return []
    cfg = steps[names.index("prune")].cfg
    if not (cfg.sparsity or cfg.ffn or cfg.heads):
        return ["customize.prune: nothing to prune; set sparsity, ffn or heads above 0"]
    if "lora" not in names:
        return []
    zeroing = ("sparsity",) if backbones.family(backbone).head_removal is not None else ("sparsity", "heads")
    problems = [f"customize.prune.{key}: {getattr(cfg, key)} sets weights to zero that merging the lora adapter "
                f"would fill back in; with lora prune structurally (customize.prune.ffn) and set "
                f"customize.prune.{key}=0" for key in zeroing if getattr(cfg, key)]
    if names.index("prune") > names.index("lora"):
        problems.append("customize: list prune before lora (LoRA then adapts the pruned model; after it, pruning "
                        "would cut the adapter's own matrices)")
    return problems


def _own_data_hint(task: str) -> str:
    """How to give a task its data: its own files, and the shipped recipes that read them."""
    from fmctl.config.compose import recipes_for_task

    recipes = recipes_for_task(task)
    example = f" (or start from recipe={recipes[0]})" if recipes else ""
    return f"give your files with data.train=PATH{example}"


def _check_lengths(run: RunConfig, declared: Any) -> list[str]:
    """The lengths the task needs (data.max_length, or a GPT translation's sums) against
    backbone.max_positions, for backbones with a position table."""
    positions = getattr(run.backbone, "max_positions", None)
    if positions is None:
        return []
    problems = []
    for need in declared.sequence_lengths(run):
        if need.length > positions:
            how = (f"{need.why}, and " if need.why else "") + (f"{need.formula} = " if need.formula else "")
            problems.append(f"{need.key}: {how}{need.length} exceeds backbone.max_positions ({positions})"
                            + (f"; {need.advice}" if need.advice else ""))
    return problems


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)
