"""`fmctl eval RUN_DIR`: score a run's model/ on its test split (or its validation split),
plus the task's further evaluations (a two-tower model's zero-shot classification), and
write RUN_DIR/eval/ in one piece (eval/<name>/ for each further evaluation)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.config.schema import RunConfig
from fmctl.errors import DataError, RunFolderError


def evaluate_run(run_dir: Path, run: RunConfig, console: Any = None) -> dict[str, Any]:
    """Score run_dir/model on data.test (or the run's validation split) and write run_dir/eval/."""
    from fmctl import report, tasks
    from fmctl.data.sources import split_paths
    from fmctl.evaluate.writer import write_eval_folder
    from fmctl.loop.fit import evaluate, make_loader
    from fmctl.loop.precision import Precision, pick_device

    out = console or report.console()
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"{run_dir}: no model/ folder with config.json; was the run completed?")
    task = tasks.create(run.task)
    split = "test" if split_paths(run.data).get("test") is not None else "validation"
    data = task.prepare(run, model_dir=model_dir, splits=(split,))
    for warning in data.warnings:
        out.print(f"warning: {warning}")
    dataset = getattr(data, split)
    if dataset is None or len(dataset) == 0:
        raise DataError(f"data.{split}: no examples to evaluate")
    model = _trained_model(run_dir, task, out)
    device = pick_device(run.trainer.device)
    model.to(device)
    # 'auto' evaluates in fp32: evaluation is cheap and gives reference numbers.
    precision = Precision("fp32" if run.trainer.precision == "auto" else run.trainer.precision, device)
    loader = make_loader(dataset, run.trainer.eval_batch_size or run.trainer.batch_size * 2, data.collate)
    metrics = evaluate(model, task, loader, device, precision)
    result = metrics.report()
    result["split"] = split
    extras = {name: (scored.report(), scored, rows)
              for name, (scored, rows) in task.more_evaluations(model, run, model_dir, device, precision).items()}
    write_eval_folder(run_dir / "eval", result, metrics, data.rows[split], task, extras)
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    out.print(report.metrics_table(flat, f"eval on {split} ({result['num_examples']} examples)"))
    for table in metrics.tables(result):
        out.print(table)
    for name, (extra, scored, _) in extras.items():
        result[name] = {k: v for k, v in extra.items() if isinstance(v, (int, float))}
        out.print(report.metrics_table(result[name], f"{name.replace('_', '-')} ({extra['num_examples']} examples)"))
        for table in scored.tables(extra):
            out.print(table)
    out.print(f"written: {run_dir / 'eval'}")
    return result


def _trained_model(run_dir: Path, task: Any, out: Any) -> Any:
    """model/, or with a LoRA adapter kept unmerged, the exact trained model: base + adapter/."""
    if (run_dir / "adapter").is_dir():
        from fmctl.customize.lora import load_adapter_model

        out.print(f"model: {run_dir / 'adapter'} on its base")
        return load_adapter_model(run_dir / "adapter", task)
    return task.load_model(run_dir / "model")
