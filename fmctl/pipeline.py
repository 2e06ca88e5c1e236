"""The spine: one short function per verb, one log line per stage.

These functions take validated configs and return what tests need, so tests can call
them without going through the CLI or Hydra. What happens around training lives in
modules of its own: resume policy (runs/resume.py), the manifest and lineage
(runs/manifest.py), finishing a run (runs/finish.py), model checks (models/positions.py).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.config.schema import RunConfig
from fmctl.errors import ConfigError, DataError, RunFolderError


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    fit: Any
    report: dict[str, Any] | None = None   # fmctl customize's base-vs-customised comparison


def finetune(run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None, console: Any = None) -> RunResult:
    """Train a task head (and the backbone under it) on labelled data."""
    return train("finetune", run, raw_cfg, overrides, console)


def pretrain(run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None, console: Any = None) -> RunResult:
    """Train a backbone on unlabelled data (MLM, CLM or MIM)."""
    return train("pretrain", run, raw_cfg, overrides, console)


def customize(run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None, console: Any = None) -> RunResult:
    """Apply the listed customizations to the base model, train with the shared loop, and
    compare base and result (customize_report.json)."""
    if not run.base:
        raise ConfigError("base: required; the model to customise (base=RUN_DIR of an earlier run, or a "
                          "save_pretrained / timm folder)")
    run = dataclasses.replace(run, backbone=dataclasses.replace(run.backbone, pretrained=run.base))
    if hasattr(raw_cfg, "_metadata"):
        from omegaconf import OmegaConf, open_dict

        with open_dict(raw_cfg):
            OmegaConf.update(raw_cfg, "backbone.pretrained", run.base, force_add=True)
    return train("customize", run, raw_cfg, overrides, console)


def train(verb: str, run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None,
          console: Any = None) -> RunResult:
    """Every training verb: check, read the data, build the model, open the run folder,
    fit, finish. Under torchrun every rank runs this; rank 0 alone writes and speaks."""
    from fmctl import report
    from fmctl.loop import distributed
    from fmctl.loop.fit import seed_everything
    from fmctl.runs import finish, manifest, resume

    dist = distributed.from_env()
    out = _console(console, dist)
    if not run.run_dir:
        raise RunFolderError("run_dir: not set")
    run_dir = Path(distributed.broadcast(dist, str(run.run_dir)))
    finished = resume.already_completed(run, run_dir)
    if finished is not None:
        return _nothing_to_continue(finished, run_dir, out)
    checkpoint = resume.resume_point(run, run_dir)
    seed_everything(run.trainer.seed)
    task = _task_for(verb, run)
    data, examples = _read_data(task, run, dist, out)
    seed_everything(run.trainer.seed)
    model, custom, counts = _build_model(verb, task, run, data, dist, out)
    state = resume.load_training_state(checkpoint, model, run_dir)
    folder = manifest.open_on_main_rank(dist, lambda: manifest.open_run_folder(
        verb, run, raw_cfg, run_dir, checkpoint, data, counts, examples, overrides, out,
        custom.records if custom else []))
    with manifest.recording_outcome(folder):
        result, metrics, comparison = finish.fit_and_save(model, task, data, run, folder, out, state, dist, custom)
    distributed.barrier(dist)
    if metrics:
        out.print(report.metrics_table(metrics, f"best model, step {result.best_step}"))
    if comparison is not None:
        from fmctl.customize.report import table

        out.print(table(comparison))
    out.print(f"run folder: {run_dir}")
    return RunResult(run_dir, metrics, result, comparison)


def _console(console: Any, dist: Any) -> Any:
    from fmctl import report

    if dist.is_main:
        return console or report.console()
    from rich.console import Console

    return Console(quiet=True)  # one rank speaks


def _nothing_to_continue(finished: dict[str, Any], run_dir: Path, out: Any) -> RunResult:
    from fmctl import report

    out.print(report.metrics_table(finished["metrics"], f"best model, step {finished.get('model_step')}"))
    out.print(f"run folder: {run_dir} (completed at step {finished.get('steps')}; trainer.resume=auto has "
              f"nothing to continue: raise trainer.max_steps or trainer.epochs to train longer)", soft_wrap=True)
    return RunResult(run_dir, finished["metrics"], None)


def _task_for(verb: str, run: RunConfig) -> Any:
    """The task, once the verb, the task and the trainer's choices are known to fit."""
    from fmctl import tasks
    from fmctl.loop.best import check_monitor
    from fmctl.loop.precision import pick_device

    name = run.task.name
    verbs = tasks.declaration(name).verbs
    if verb == "pretrain" and verb not in verbs:
        objectives = [f"{d.name} ({'/'.join(d.backbones)})" for d in tasks.declarations() if d.pretraining]
        objectives = ", ".join(objectives[:-1]) + f" or {objectives[-1]}" if len(objectives) > 1 else objectives[0]
        raise ConfigError(f"task: '{name}' is not a pretraining objective; fmctl pretrain runs task={objectives}; "
                          f"fine-tune with fmctl finetune")
    if verb in ("finetune", "customize") and verb not in verbs:
        if verb == "customize" and "finetune" in verbs:
            raise ConfigError(f"task: fmctl customize does not run '{name}'; train it with fmctl finetune")
        raise ConfigError(f"task: '{name}' is a pretraining objective; run it with fmctl pretrain")
    if verb != "customize" and run.customize:
        raise ConfigError(f"customize: operations run with fmctl customize base=... (not fmctl {verb})")
    if verb == "customize" and run.trainer.strategy == "fsdp" and run.trainer.nproc > 1:
        raise ConfigError("trainer.strategy: fmctl customize runs with ddp or one process (the final model is "
                          "rebuilt unsharded under fsdp, without the customizations)")
    task = tasks.create(run.task)
    pick_device(run.trainer.device)
    check_monitor(task, run.trainer)
    return task


def _read_data(task: Any, run: RunConfig, dist: Any, out: Any) -> tuple[Any, dict[str, int]]:
    started = time.perf_counter()
    data = task.prepare(run)
    for warning in data.warnings:
        out.print(f"warning: {warning}")
    if data.train is None or len(data.train) == 0:
        raise DataError("data.train: no training examples")
    examples = {split: len(getattr(data, split)) for split in ("train", "validation", "test")
                if getattr(data, split) is not None}
    if run.trainer.drop_last and run.trainer.batch_size * dist.world_size > len(data.train):
        raise DataError(f"trainer.batch_size: {run.trainer.batch_size} x {dist.world_size} process(es) is more than "
                        f"the {len(data.train)} training examples and trainer.drop_last=true would drop every batch")
    labels = f", {len(data.label_names)} labels" if data.label_names else ""
    out.print(f"data: {' / '.join(f'{n} {split}' for split, n in examples.items())} examples{labels} "
              f"({time.perf_counter() - started:.1f}s)")
    if not examples.get("validation"):
        out.print("warning: no validation examples, so no evaluation: model/ will hold the last step's weights "
                  "and no metrics are reported (give data.validation, or a prepared corpus with validation_fraction > 0)",
                  soft_wrap=True)
    return data, examples


def _build_model(verb: str, task: Any, run: RunConfig, data: Any, dist: Any, out: Any) -> tuple[Any, Any, dict]:
    """The task's model, checked against the sequences it will get and, for `fmctl
    customize`, customised (the untouched base kept for the report)."""
    from fmctl.models.groups import parameter_counts
    from fmctl.models.positions import check_positions

    model = task.build_model(run, data)
    check_positions(run, model, task.declaration.sequence_lengths(run))
    custom = None
    if verb == "customize":
        from fmctl.customize import apply_all

        custom = apply_all(model, run, task, data, out)
        model = custom.model
    counts = parameter_counts(model)
    from fmctl.backbones import family

    source = family(run.backbone.name).describe(run.backbone)
    out.print(f"model: {run.backbone.name} ({source}): {counts['total']:,} parameters"
              + (f"; {dist.world_size} processes ({run.trainer.strategy})" if dist.enabled else ""))
    return model, custom, counts


def evaluate_run(run_dir: Path, run: RunConfig, raw_cfg: Any = None, console: Any = None) -> dict[str, Any]:
    """Score run_dir/model on data.test (or the run's validation split) and write run_dir/eval/."""
    from fmctl.evaluate.run import evaluate_run as evaluate

    return evaluate(run_dir, run, console)


def prepare_data(args: list[str], console: Any = None) -> int:
    """`fmctl data prepare`: validate the settings, prepare (or reuse) the corpus, report."""
    from fmctl import report
    from fmctl.config.compose import schema_from_overrides
    from fmctl.config.prepare_schema import PrepareConfig
    from fmctl.data.prepare import prepare_corpus, summary_lines

    out = console or report.console()
    cfg = schema_from_overrides(PrepareConfig, args)
    result = prepare_corpus(cfg, out)
    out.print(report.metrics_table(result.report, f"data prepare{' (cached)' if result.cached else ''}"))
    for line in summary_lines(result.report, cfg.txt_mode):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    out.print(f"prepared corpus: {result.out}")
    return 0


def icon_pairs(args: list[str], console: Any = None) -> int:
    """`fmctl data icons`: image-caption pairs from an installed icon theme (fmctl.data.icons)."""
    from fmctl import report
    from fmctl.config.compose import schema_from_overrides
    from fmctl.data.icons import IconsConfig, make_icons

    out = console or report.console()
    cfg = schema_from_overrides(IconsConfig, args)
    made = make_icons(cfg)
    for split in ("train", "validation", "test"):
        out.print(f"{split}: {made['pairs'][split]} pairs, {made['captions'][split]} distinct captions, "
                  f"{made['concepts'][split]} concepts")
    classes = ", ".join(f"{name} {count}" for name, count in made["zero_shot_classes"].items())
    out.print(f"zero_shot/: {sum(made['zero_shot_classes'].values())} test images in class folders ({classes})",
              soft_wrap=True)
    out.print(f"written: {cfg.out} (from {made['theme']})")
    return 0
