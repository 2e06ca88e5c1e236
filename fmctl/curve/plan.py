"""A learning curve's plan, made and checked before any cell trains: the starts (each a
model folder, or scratch), the budgets against the training data, the cells, and the
curve folder (whose settings must match the ones its finished cells were trained with)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmctl.curve.config import CurveConfig, Words, split_words
from fmctl.errors import ConfigError

SETTINGS_FILE = "curve.json"


@dataclass
class Start:
    spec: str                 # "scratch", or the folder as given
    label: str                # its name in tables, plots and cell folders
    overrides: list[str]      # what makes a cell start here


@dataclass
class Cell:
    name: str
    start: str                # the start's label
    budget: int | None        # None: every training example
    seed: int
    overrides: list[str]


@dataclass
class Plan:
    cfg: CurveConfig
    words: Words
    recipe_path: Path
    task: str
    main_metric: str
    main_mode: str
    train_examples: int
    starts: list[Start]
    budgets: list[int | None]
    cells: list[Cell]
    out: Path
    notes: list[str] = field(default_factory=list)


def make_plan(args: list[str]) -> Plan:
    from fmctl import tasks
    from fmctl.config.compose import schema_from_overrides

    words = split_words(args)
    cfg = schema_from_overrides(CurveConfig, words.curve)
    _refuse_torchrun(words)
    starts = [_start(i, spec, words) for i, spec in enumerate(cfg.starts)]
    _unique_labels(starts)
    runs = [_composed(cfg, words, start) for start in starts]
    recipe_path, run = runs[0]
    task = tasks.create(run.task)
    rows = task.read_rows(run, ("train",))
    if rows is None:
        able = [d.name for d in tasks.declarations() if d.probe_data]
        raise ConfigError(f"task: learning curves count single-label training examples; '{run.task.name}' has "
                          f"none to count (tasks that do: {', '.join(able)})")
    train = rows["train"]
    notes: list[str] = []
    budgets = _budgets(cfg.budgets, len(train), len({r.label for r in train}), notes)
    cells = [Cell(f"{s.label}_n{b if b is not None else 'all'}_seed{seed}", s.label, b, seed,
                  [f"data.label_budget={b if b is not None else 'null'}", f"data.label_budget_seed={seed}",
                   f"trainer.seed={seed}", *s.overrides])
             for s in starts for b in budgets for seed in range(cfg.seeds)]
    out = Path(cfg.out).expanduser() if cfg.out else Path("runs") / "learning_curve" / recipe_path.stem
    return Plan(cfg, words, recipe_path, run.task.name, task.main_metric, task.main_mode, len(train), starts, budgets,
                cells, out, notes)


def _refuse_torchrun(words: Words) -> None:
    """As for sweeps: cells are jobs of a launcher, each in one process."""
    if int(words.launch.get("nproc", 1)) > 1 or int(words.launch.get("nnodes", 1)) > 1:
        raise ConfigError("--nproc: a learning curve runs its cells as a sweep, which cannot also launch torchrun; "
                          "run cells in parallel with a launcher (hydra/launcher=joblib hydra.launcher.n_jobs=2, or "
                          "hydra/launcher=slurm) and one process each")


def _start(index: int, spec: str, words: Words) -> Start:
    """scratch, or a folder a model loads from (a run folder's model/, pkg: paths too)."""
    from fmctl.models import pretrained

    own = words.scratch if spec == "scratch" else words.pretrained
    _dotted_only("scratch" if spec == "scratch" else "pretrained", own)
    if spec == "scratch":
        return Start(spec, "scratch", ["backbone.pretrained=null", *own])
    where = Path(spec).expanduser()
    if not spec.startswith("pkg:") and not where.exists():
        raise ConfigError(f"starts[{index}]: '{spec}' does not exist; a start is scratch, a pretrained model folder "
                          f"or an fmctl run folder")
    folder = pretrained.resolve(spec, key=f"starts[{index}]")
    if not isinstance(folder, Path) or not folder.is_dir():
        raise ConfigError(f"starts[{index}]: '{spec}' is not a model folder (config.json and weights); a start is "
                          f"scratch, a pretrained model folder or an fmctl run folder")
    name = spec[4:].split("/")[0] if spec.startswith("pkg:") else where.resolve().name
    label = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or f"start{index}"
    value = spec if spec.startswith("pkg:") else str(where.resolve())
    return Start(spec, label, [f"backbone.pretrained='{value}'", *own])


def _dotted_only(kind: str, overrides: list[str]) -> None:
    """Per-start overrides are applied to each cell's composed config: keys, not groups."""
    from fmctl import paths

    groups = set(paths.config_groups())
    for text in overrides:
        name = text.split("=", 1)[0].lstrip("+~")
        if "=" not in text or name in groups or name.startswith("hydra"):
            raise ConfigError(f"{kind}.{text}: not a key=value setting for the {kind} start (config groups such as "
                              f"backbone=gpt apply to every cell: give them without the prefix)")


def _unique_labels(starts: list[Start]) -> None:
    seen: dict[str, int] = {}
    for start in starts:
        if start.label in seen:
            seen[start.label] += 1
            start.label = f"{start.label}-{seen[start.label]}"
        else:
            seen[start.label] = 1


def _composed(cfg: CurveConfig, words: Words, start: Start) -> tuple[Path, Any]:
    """The start's cell config composed and validated as `fmctl finetune` would, so a bad
    key is reported before any cell trains."""
    from fmctl.config.compose import parse_invocation, preflight

    inv = parse_invocation([f"recipe={cfg.recipe}", *words.finetune, *start.overrides])
    return inv.recipe_path, preflight(inv).run


def _budgets(asked: list[str], examples: int, classes: int, notes: list[str]) -> list[int | None]:
    """Budgets as label counts (None: all), ascending; a budget at or above the training
    examples becomes `all`, once."""
    found: list[int | None] = []
    for i, text in enumerate(asked):
        word = str(text).strip().lower()
        if word == "all":
            value = None
        elif word.isdigit() and int(word) > 0:
            value = int(word)
            if value < classes:
                raise ConfigError(f"budgets[{i}]: {value} labels cannot cover the {classes} classes of the training "
                                  f"data; give at least {classes}")
            if value >= examples:
                notes.append(f"budget {value} is not less than the {examples} training examples; using all "
                             f"{examples} once")
                value = None
        else:
            raise ConfigError(f"budgets[{i}]: expected a number of labels or 'all', got '{text}'")
        if value not in found:
            found.append(value)
    return sorted(found, key=lambda b: examples if b is None else b)


def settings_record(plan: Plan) -> dict[str, Any]:
    """What every cell of the folder shares; a finished cell is re-used only under it."""
    return {"recipe": str(plan.recipe_path), "finetune": plan.words.finetune, "task": plan.task}


def check_folder(plan: Plan) -> None:
    """A curve folder holds the cells of one setting: other settings go elsewhere."""
    path = plan.out / SETTINGS_FILE
    if not path.is_file():
        return
    held = json.loads(path.read_text(encoding="utf-8")).get("settings")
    if held != settings_record(plan):
        raise ConfigError(f"out: {plan.out} holds a learning curve of other settings ({held}); give another out= "
                          f"or delete that folder")
