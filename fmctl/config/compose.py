"""From command-line words to a validated config.

`parse_invocation` splits what the user typed into the recipe, Hydra's own flags and
overrides. `preflight` composes the recipe with Hydra's compose API and validates the
result before Hydra's runner is started, because Hydra reports only its first problem,
as several lines, with no suggestion. Overrides of keys that the schema knows but the
recipe's YAML does not spell out are rewritten to `++key=value`, so a recipe need not
list every default to be overridable.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmctl import paths
from fmctl._suggest import did_you_mean
from fmctl.config.schema import RunConfig
from fmctl.errors import ConfigError

DEFAULT_RECIPE = "bert_topics"
# Hydra flags passed through unchanged; those in _WITH_VALUE take the next word.
_HYDRA_FLAGS = {"-m", "--multirun", "--resolve", "--hydra-help", "-r", "--run"}
_HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_BLOCKED_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
# Top-level keys that recipes do not spell out; always set with ++ so they need not exist.
RUN_KEYS = ("recipe", "run_dir", "overwrite", "base")


# torchrun settings given as flags: fmctl finetune --nproc 4 --nnodes 2 --node-rank 0 --rdzv-endpoint h:29500
_DIST_FLAGS = {"--nproc": "nproc", "--nnodes": "nnodes", "--node-rank": "node_rank", "--rdzv-endpoint": "rdzv_endpoint"}


@dataclass
class Invocation:
    recipe: str
    recipe_path: Path
    overrides: list[str] = field(default_factory=list)
    hydra_flags: list[str] = field(default_factory=list)
    launch: dict[str, str] = field(default_factory=dict)   # torchrun flags

    @property
    def multirun(self) -> bool:
        return any(f in ("-m", "--multirun") for f in self.hydra_flags)

    @property
    def show_only(self) -> bool:
        """--cfg/--info/--hydra-help print something and run no job."""
        return any(f in ("--cfg", "-c", "--info", "-i", "--hydra-help") for f in self.hydra_flags)


def parse_invocation(args: list[str], default_recipe: str = DEFAULT_RECIPE) -> Invocation:
    recipe = default_recipe
    overrides: list[str] = []
    flags: list[str] = []
    launch: dict[str, str] = {}
    i = 0
    while i < len(args):
        word = args[i]
        name, _, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in _DIST_FLAGS:
            value = inline or (args[i + 1] if i + 1 < len(args) else "")
            if not value:
                raise ConfigError(f"{name}: needs a value")
            launch[_DIST_FLAGS[name]] = value
            i += 1 if inline else 2
            continue
        if word in _BLOCKED_FLAGS:
            raise ConfigError(f"{word}: not supported by fmctl; choose the experiment with recipe=NAME or recipe=path/to/file.yaml")
        if word in _HYDRA_FLAGS:
            flags.append(word)
        elif word in _HYDRA_FLAGS_WITH_VALUE:
            if i + 1 >= len(args):
                raise ConfigError(f"{word}: needs a value (e.g. {word} job)")
            flags += [word, args[i + 1]]
            i += 1
        elif word in ("--info", "-i"):
            flags.append(word)
            if i + 1 < len(args) and args[i + 1] in _INFO_CHOICES:
                flags.append(args[i + 1])
                i += 1
        elif word.startswith("-") and "=" not in word:
            raise ConfigError(f"{word}: unknown option; overrides are written key=value (see fmctl finetune --help)")
        elif word.startswith("recipe="):
            recipe = word.split("=", 1)[1]
        else:
            overrides.append(word)
        i += 1
    path = find_recipe(recipe)
    return Invocation(recipe=recipe_name(path), recipe_path=path, overrides=overrides, hydra_flags=flags,
                      launch=launch)


def available_recipes() -> list[str]:
    names: list[str] = []
    for folder in paths.recipe_dirs():
        names += [p.stem for p in sorted(folder.glob("*.yaml")) if p.stem not in names]
    return names


@dataclass
class RecipeSummary:
    name: str
    picks: dict[str, Any]        # config group -> option the recipe's defaults list chooses
    purpose: str                 # the first sentence of its header comment


def recipe_summaries() -> list[RecipeSummary]:
    """Every recipe with its chosen options and what it is for (its header comment)."""
    from omegaconf import OmegaConf

    found = []
    for name in available_recipes():
        path = find_recipe(name)
        try:
            defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []
        except Exception:  # a broken recipe is reported when it is used
            continue
        picks = {str(k).lstrip("+"): v for d in defaults if isinstance(d, dict) for k, v in d.items()}
        found.append(RecipeSummary(name, picks, _purpose(path)))
    return found


def _purpose(path: Path) -> str:
    """The header comment up to its first command line, cut at its first sentence."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or line.lstrip("# ").startswith("fmctl ") or line.startswith("#   "):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    end = re.search(r"[.;] (?=[A-Z])|; ", text)   # a sentence's end, not "e.g. x"
    return (text[:end.start()] if end else text).rstrip(".")


def recipes_for_task(task: str) -> list[str]:
    """The recipes whose defaults list picks task=`task`, the ones reading one's own files first."""
    from fmctl.data.sources import builtin_names

    found = [(r.picks.get("data") in builtin_names(), r.name) for r in recipe_summaries()
             if r.picks.get("task") == task]
    return [name for _, name in sorted(found)]


def find_recipe(name: str) -> Path:
    """recipe=NAME looks in ./recipes then the shipped recipes; a path to a YAML file
    (such as an earlier run's config.yaml) is used as is."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"recipe: file '{name}' does not exist")
        return path.resolve()
    for folder in paths.recipe_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    names = available_recipes()
    raise ConfigError(f"recipe: unknown recipe '{name}'{did_you_mean(name, names)}; available: {', '.join(names)}")


def recipe_name(path: Path) -> str:
    """A saved run config carries its recipe's name; a recipe file is named by its stem."""
    if path.name == "config.yaml":
        match = re.search(r"^recipe:\s*(\S+)\s*$", path.read_text(encoding="utf-8", errors="replace"), re.M)
        if match:
            return match.group(1).strip("'\"")
    return path.stem


def searchpath_override() -> str:
    return f"hydra.searchpath=[file://{paths.conf_dir().resolve()}]"


@dataclass
class Preflight:
    overrides: list[str]           # what to hand to Hydra's runner
    config: Any                    # composed DictConfig (first job of a sweep)
    run: RunConfig | None          # validated; None when validation was skipped


def preflight(inv: Invocation, extra: list[str] = (), strict: bool = True) -> Preflight:
    """Compose and validate before Hydra runs; raise ConfigError with every problem."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from fmctl.config.store import register

    register()
    problems: list[str] = []
    parser = OverridesParser.create()
    groups = paths.config_groups()
    group_ovs, dotted, passthrough = [], [], []
    for text in _expand_inline_ops([*inv.overrides, *extra], parser):
        try:
            ov = parser.parse_overrides([text])[0]
        except Exception as exc:
            problems.append(f"override '{text}': not a valid key=value override ({str(exc).splitlines()[0]})")
            continue
        key = ov.key_or_group
        if key.startswith("hydra"):
            passthrough.append(text)
        elif key in groups:
            group_ovs.append((text, ov))
        elif "/" in key:
            problems.append(f"{key}: unknown config group{did_you_mean(key, groups)}; groups are {', '.join(groups)}")
        else:
            dotted.append((text, ov))

    compose_ovs = [searchpath_override()]
    for i, (text, ov) in enumerate(group_ovs):
        options = paths.group_options(ov.key_or_group)
        choices = _values(ov) if not ov.is_delete() else []
        # customize=[freeze,lora] selects several options of one group (Hydra's multi-select).
        flat = [c for choice in choices for c in (choice if isinstance(choice, list) else [choice])]
        bad = [c for c in flat if str(c) not in options]
        for c in bad:
            problems.append(f"{ov.key_or_group}: unknown option '{c}'{did_you_mean(str(c), options)}; "
                            f"available: {', '.join(options)}")
        if not text.startswith(("+", "~")) and not _recipe_lists_group(inv.recipe_path, ov.key_or_group):
            # A recipe that does not list the group (customize=[...] on a finetune recipe, sched=cosine
            # on a run's saved config.yaml) still takes the option: appended, it overrides the body.
            text = "+" + text
            group_ovs[i] = (text, ov)
        if not bad:
            compose_ovs.append(text if not ov.is_sweep_override() else f"{text.split('=', 1)[0]}={_show(choices[0])}")

    cfg = None
    try:
        with initialize_config_dir(config_dir=str(inv.recipe_path.parent), version_base=None, job_name="fmctl"):
            cfg = compose(config_name=inv.recipe_path.stem, overrides=compose_ovs)
    except Exception as exc:
        problems.append(f"recipe '{inv.recipe_path}': {' '.join(str(exc).split())[:300]}")
    if cfg is None:
        raise ConfigError(problems)

    OmegaConf.set_struct(cfg, False)
    cfg.recipe = inv.recipe
    final_dotted = []
    for text, ov in dotted:
        key = ov.key_or_group
        if ov.is_delete():
            final_dotted.append(text)
            continue
        values = _values(ov)
        exists = OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT
        parts = key.split(".")
        swept_ops = any(o.key_or_group == "customize" and o.is_sweep_override() for _, o in group_ovs)
        if parts[0] == "customize" and len(parts) > 2 and not exists and not swept_ops:
            chosen = list((cfg.get("customize") or {}).keys()) if OmegaConf.is_dict(cfg.get("customize")) else []
            if parts[1] not in chosen and parts[1] in paths.group_options("customize"):
                problems.append(f"{key}: op '{parts[1]}' is not in customize=[{','.join(map(str, chosen))}]; "
                                f"add it to the list or drop the setting")
                continue
        if key.split(".")[0] in RUN_KEYS or (not exists and schema_accepts(key, cfg)):
            text = "++" + text.lstrip("+")
        final_dotted.append(text)
        if values:
            OmegaConf.update(cfg, key, values[0], merge=False, force_add=True)

    run = None
    if strict:
        try:
            from fmctl.config.validate import validate

            run = validate(cfg)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return Preflight(overrides=passthrough + [t for t, _ in group_ovs] + final_dotted, config=cfg, run=run)


_ABSENT = object()


def _expand_inline_ops(texts: list[str], parser: Any) -> list[str]:
    """customize=[freeze,{op:prune,sparsity:0.3}] -> customize=[freeze,prune] plus
    customize.prune.sparsity=0.3: settings written inline in the list of operations."""
    out = []
    for text in texts:
        try:
            ov = parser.parse_overrides([text])[0]
        except Exception:
            out.append(text)  # reported by the caller
            continue
        value = None if ov.is_sweep_override() or ov.is_delete() else ov.value()
        if ov.key_or_group != "customize" or not isinstance(value, list) or not any(isinstance(v, dict) for v in value):
            out.append(text)
            continue
        names, settings = [], []
        for item in value:
            if isinstance(item, dict):
                name = str(item.get("op", "?"))
                settings += [f"customize.{name}.{k}={_hydra_value(v)}" for k, v in item.items() if k != "op"]
            else:
                name = str(item)
            names.append(name)
        prefix = text[:len(text) - len(text.lstrip("+"))]
        out += [f"{prefix}customize=[{','.join(names)}]", *settings]
    return out


def _hydra_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


def _show(choice: Any) -> str:
    return f"[{','.join(map(str, choice))}]" if isinstance(choice, list) else str(choice)


def _recipe_lists_group(path: Path, group: str) -> bool:
    from omegaconf import OmegaConf

    try:
        defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []
    except Exception:  # a broken recipe is reported by compose itself
        return True
    return any(isinstance(d, dict) and any(str(k).lstrip("+").split("@")[0].replace("optional ", "").strip() == group
                                            for k in d) for d in defaults)


def _values(ov: Any) -> list[Any]:
    """The value(s) an override sets; [] for interval sweeps (no value to check)."""
    if not ov.is_sweep_override():
        return [ov.value()]
    if ov.value_type.name == "INTERVAL_SWEEP":
        return []
    return list(ov.sweep_iterator())


def schema_accepts(dotted_key: str, cfg: Any) -> bool:
    """Is `dotted_key` a field of the schema that applies to this config?"""
    parts = dotted_key.split(".")
    schema: Any = RunConfig
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(schema):
            return False
        if depth == 0 and part in ("backbone", "task"):
            from fmctl.config.validate import named_schemas

            table = named_schemas(part)
            name = cfg.get(part, {}).get("name") if hasattr(cfg, "get") else None
            schema = table.get(name)
            if schema is None:
                return False
            continue
        hints = typing.get_type_hints(schema)
        if part not in hints:
            return False
        schema = hints[part]
    return True


def schema_from_overrides(schema: type, args: list[str], base: dict[str, Any] | None = None) -> Any:
    """A verb without recipes (such as `data prepare`, `probe`): key=value words, in Hydra's
    override syntax, applied to the schema's defaults (updated with `base`) and validated.
    `data=<option>` picks a conf/data option (data=topics) as recipes do."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from fmctl.config.validate import validate_schema

    cfg = OmegaConf.create(dataclasses.asdict(schema()))
    if base:
        cfg = OmegaConf.merge(cfg, base)
    args = [word for text in args for word in _data_option(text, schema)]
    parser = OverridesParser.create()
    problems = []
    for text in args:
        if text.startswith("-"):
            problems.append(f"{text}: unknown option; settings are written key=value")
            continue
        try:
            ov = parser.parse_overrides([text])[0]
        except Exception as exc:
            problems.append(f"override '{text}': not a valid key=value override ({str(exc).splitlines()[0]})")
            continue
        if ov.is_sweep_override() or ov.is_delete():
            problems.append(f"{ov.key_or_group}: sweeps and deletions are not supported here")
            continue
        OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=False, force_add=True)
    if problems:
        raise ConfigError(problems)
    return validate_schema(schema, cfg)


def _data_option(text: str, schema: type) -> list[str]:
    """`data=NAME` -> that conf/data option's settings as data.<key>=<value> words (its
    `_schema` base is the schema's defaults already); any other word unchanged."""
    key, sep, name = text.partition("=")
    if key.lstrip("+") != "data" or not sep or "data" not in {f.name for f in dataclasses.fields(schema)}:
        return [text]
    from omegaconf import OmegaConf

    options = paths.group_options("data")
    if name not in options:
        raise ConfigError(f"data: unknown option '{name}'{did_you_mean(name, options)}; available: {', '.join(options)}")
    values = OmegaConf.to_container(OmegaConf.load(paths.conf_dir() / "data" / f"{name}.yaml"))
    values.pop("defaults", None)
    return [f"data.{k}={_hydra_value(v)}" for k, v in values.items()]
