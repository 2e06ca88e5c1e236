"""`fmctl eval RUN_DIR`: score a run's model/ on its test split (or its validation split)
and write RUN_DIR/eval/ in one piece.

Besides the task's metrics: a progress bar (or log lines) over the pass, a bootstrap
confidence interval of the main metric (eval.bootstrap), for classifiers the expected
calibration error with a reliability diagram, before and after one temperature fitted on
the validation split (eval.temperature_scaling), which model/ then keeps for predict and
exports; and the task's further evaluations (a two-tower model's zero-shot
classification), each in eval/<name>/.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.config.schema import RunConfig
from fmctl.errors import ConfigError, DataError, RunFolderError


def evaluate_run(run_dir: Path, run: RunConfig, console: Any = None) -> dict[str, Any]:
    """Score run_dir/model on data.test (or the run's validation split) and write run_dir/eval/."""
    from fmctl import report, tasks
    from fmctl.data.sources import split_paths
    from fmctl.evaluate.writer import write_eval_folder
    from fmctl.models.saved import saved_temperature

    out = console or report.console()
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"{run_dir}: no model/ folder with config.json; was the run completed?")
    task = tasks.create(run.task)
    fitting = run.eval.temperature_scaling
    if fitting and task.temperature_fitter() is None:
        raise ConfigError(f"eval.temperature_scaling: task '{run.task.name}' has no class probabilities to scale "
                          f"(temperature scaling is for single-label classification)")
    split = "test" if split_paths(run.data).get("test") is not None else "validation"
    data = task.prepare(run, model_dir=model_dir, splits=(split, "validation") if fitting else (split,))
    for warning in data.warnings:
        out.print(f"warning: {warning}")
    dataset = getattr(data, split)
    if dataset is None or len(dataset) == 0:
        raise DataError(f"data.{split}: no examples to evaluate")
    scorer = _Scorer(run, task, run_dir, data, out)
    temperature = scorer.fit_temperature(model_dir, split) if fitting else saved_temperature(model_dir)
    metrics = scorer.score(split, task.eval_metrics(run.eval, temperature))
    result = metrics.report()
    result["split"] = split
    interval = _bootstrap(metrics, run, task.main_metric, out)
    if interval is not None:
        name = interval["metric"]
        result.update({f"{name}_ci_low": interval["low"], f"{name}_ci_high": interval["high"]})
        result["bootstrap"] = interval
    extras = {name: (scored.report(), scored, rows) for name, (scored, rows)
              in task.more_evaluations(scorer.model, run, model_dir, scorer.device, scorer.precision).items()}
    write_eval_folder(run_dir / "eval", result, metrics, data.rows[split], task, extras)
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
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


class _Scorer:
    """The trained model on the eval device in fp32 (or the precision asked for), and
    passes over the prepared splits with progress."""

    def __init__(self, run: RunConfig, task: Any, run_dir: Path, data: Any, out: Any):
        from fmctl.loop.precision import Precision, pick_device

        self.run, self.task, self.data, self.out = run, task, data, out
        self.model = _trained_model(run_dir, task, out)
        self.device = pick_device(run.trainer.device)
        self.model.to(self.device)
        # 'auto' evaluates in fp32: evaluation is cheap and gives reference numbers.
        self.precision = Precision("fp32" if run.trainer.precision == "auto" else run.trainer.precision, self.device)

    def score(self, split: str, metrics: Any) -> Any:
        from fmctl.loop.eval_progress import EvalProgress
        from fmctl.loop.fit import evaluate, make_loader

        trainer = self.run.trainer
        loader = make_loader(getattr(self.data, split), trainer.eval_batch_size or trainer.batch_size * 2,
                             self.data.collate)
        with EvalProgress(len(loader), self.out, trainer.progress, f"eval {split}") as progress:
            return evaluate(self.model, self.task, loader, self.device, self.precision, metrics=metrics,
                            progress=progress)

    def fit_temperature(self, model_dir: Path, split: str) -> float:
        """One temperature from a pass over the validation split, saved in model/."""
        from fmctl import __version__
        from fmctl.models.saved import save_temperature

        if self.data.validation is None or len(self.data.validation) == 0:
            raise DataError("eval.temperature_scaling: the validation split is empty; give data.validation=FILE")
        fitter = self.score("validation", self.task.temperature_fitter())
        temperature = fitter.temperature()
        record = {"temperature": temperature, "fitted_on": "validation", **fitter.summary(),
                  "fmctl_version": __version__}
        save_temperature(model_dir, record)
        self.out.print(f"temperature scaling: T = {temperature:.4f} fitted on {record['examples']} validation "
                       f"examples (NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}); saved in "
                       f"{model_dir / 'temperature.json'}", soft_wrap=True)
        if split == "validation":
            self.out.print("warning: no data.test, so the calibration after scaling is measured on the split the "
                           "temperature was fitted on (optimistic); give data.test=FILE for an honest figure",
                           soft_wrap=True)
        return temperature


def _bootstrap(metrics: Any, run: RunConfig, main_metric: str, out: Any) -> dict[str, Any] | None:
    """The confidence interval of the main metric, when eval.bootstrap asks for one and
    the task's metrics give per-example statistics."""
    settings = run.eval
    if not settings.bootstrap:
        return None
    provide = getattr(metrics, "bootstrap_statistics", None)
    stats = provide() if provide is not None else None
    if stats is None:
        out.print(f"note: no bootstrap interval for task '{run.task.name}': its {main_metric} is not computed from "
                  f"per-example statistics here", soft_wrap=True)
        return None
    from fmctl.evaluate.bootstrap import confidence_interval

    return confidence_interval(stats, settings.bootstrap, settings.confidence, settings.seed)


def _trained_model(run_dir: Path, task: Any, out: Any) -> Any:
    """model/, or with a LoRA adapter kept unmerged, the exact trained model: base + adapter/."""
    if (run_dir / "adapter").is_dir():
        from fmctl.customize.lora import load_adapter_model

        out.print(f"model: {run_dir / 'adapter'} on its base")
        return load_adapter_model(run_dir / "adapter", task)
    return task.load_model(run_dir / "model")
