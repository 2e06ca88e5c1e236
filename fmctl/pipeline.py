"""The spine: one short function per verb, one log line per stage.

These functions take validated configs and return what tests need, so tests can call
them without going through the CLI or Hydra.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl import __version__
from fmctl.checkpoint import RunFolder
from fmctl.config.schema import RunConfig
from fmctl.errors import DataError, RunFolderError


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    fit: Any


def finetune(run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None, console: Any = None) -> RunResult:
    from fmctl import report
    from fmctl.loop.fit import evaluate, fit, make_loader, seed_everything
    from fmctl.models.groups import parameter_counts
    from fmctl.tasks import get_task

    out = console or report.console()
    run_dir = Path(run.run_dir) if run.run_dir else None
    if run_dir is None:
        raise RunFolderError("run_dir: not set")
    seed_everything(run.trainer.seed)
    task = get_task(run.task)

    started = time.perf_counter()
    data = task.prepare(run)
    if data.train is None or len(data.train) == 0:
        raise DataError("data.train: no training examples")
    out.print(f"data: {len(data.train)} train / {len(data.validation) if data.validation else 0} validation / "
              f"{len(data.test) if data.test else 0} test examples, {len(data.label_names)} labels "
              f"({time.perf_counter() - started:.1f}s)")

    seed_everything(run.trainer.seed)
    model = task.build_model(run, data)
    counts = parameter_counts(model)
    source = run.backbone.pretrained or f"random init, size {run.backbone.size}"
    out.print(f"model: {run.backbone.name} ({source}): {counts['total']:,} parameters")

    folder = RunFolder.create(run_dir, run.overwrite)
    folder.write_config(raw_cfg)
    folder.update_manifest(
        status="running", fmctl_version=__version__, git_revision=_git_revision(), verb="finetune",
        recipe=run.recipe, run_dir=str(folder.path), task=run.task.name, backbone=run.backbone.name,
        pretrained=run.backbone.pretrained, label_names=data.label_names, parameters=counts,
        customizations=[], data=data.sources, overrides=overrides or [],
        examples={split: len(getattr(data, split)) for split in ("train", "validation", "test")
                  if getattr(data, split) is not None}, started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    out.print(f"run folder: {folder.path}")

    try:
        result = fit(model, task, data, run, folder, out)
        if result.best_step is not None:
            folder.load_weights("best", model)
        _save_model_atomically(task, model, data, folder)
    except BaseException as exc:
        folder.update_manifest(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                               error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        raise

    metrics = dict(result.best_metrics)
    metrics.pop("epoch", None)
    if data.test is not None and len(data.test):
        from fmctl.loop.precision import Precision

        loader = make_loader(data.test, run.trainer.eval_batch_size or run.trainer.batch_size * 2, data.collate)
        test = evaluate(model, task, loader, result.device, Precision(result.precision, result.device)).compute()
        metrics.update({f"test/{k}": v for k, v in test.items()})
    folder.update_manifest(status="completed", metrics=metrics, steps=result.steps, epochs=result.epochs,
                           model_step=result.best_step if result.best_step is not None else result.steps,
                           precision=result.precision, device=result.device, stopped_early=result.stopped_early,
                           train_seconds=round(result.train_seconds, 2))
    out.print(report.metrics_table(metrics, f"best model, step {result.best_step}"))
    out.print(f"run folder: {folder.path}")
    return RunResult(folder.path, metrics, result)


def _save_model_atomically(task: Any, model: Any, data: Any, folder: RunFolder) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=folder.path))
    try:
        task.save_model(model, data, tmp)
        if folder.model_dir.exists():
            shutil.rmtree(folder.model_dir)
        os.replace(tmp, folder.model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def evaluate_run(run_dir: Path, run: RunConfig, raw_cfg: Any = None, console: Any = None) -> dict[str, Any]:
    """Score run_dir/model on data.test (or the run's validation split) and write run_dir/eval/."""
    from fmctl import report
    from fmctl.data.sources import split_paths
    from fmctl.evaluate.writer import write_eval_folder
    from fmctl.loop.fit import evaluate, make_loader
    from fmctl.loop.precision import Precision, pick_device
    from fmctl.tasks import get_task

    out = console or report.console()
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"{run_dir}: no model/ folder with config.json; was the run completed?")
    task = get_task(run.task)
    split = "test" if split_paths(run.data).get("test") is not None else "validation"
    data = task.prepare(run, model_dir=model_dir, splits=(split,))
    dataset = getattr(data, split)
    if dataset is None or len(dataset) == 0:
        raise DataError(f"data.{split}: no examples to evaluate")
    model = task.load_model(model_dir)
    device = pick_device(run.trainer.device)
    model.to(device)
    # 'auto' evaluates in fp32: evaluation is cheap and gives reference numbers.
    precision = Precision("fp32" if run.trainer.precision == "auto" else run.trainer.precision, device)
    loader = make_loader(dataset, run.trainer.eval_batch_size or run.trainer.batch_size * 2, data.collate)
    metrics = evaluate(model, task, loader, device, precision)
    result = metrics.report()
    result["split"] = split
    write_eval_folder(run_dir / "eval", result, metrics, data.rows[split], data.label_names, task)
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    out.print(report.metrics_table(flat, f"eval on {split} ({result['num_examples']} examples)"))
    out.print(report.per_class_table(result["per_class"]))
    out.print(f"written: {run_dir / 'eval'}")
    return result


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return found.stdout.strip() or None if found.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
