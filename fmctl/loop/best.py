"""Which metric decides the best model, and whether the run keeps improving.

`monitored` is the one place that turns trainer.monitor / trainer.monitor_mode and the
task's declaration into (metric, direction): fit() tracks the best model with it and
the sweep launcher reports it as the job's objective, so the two cannot disagree.
This module imports no torch: the launcher asks it before any training starts.
"""
from __future__ import annotations

from typing import Any, Literal

from fmctl.loop.state import Progress

Mode = Literal["min", "max"]


def monitored(task: Any, trainer: Any) -> tuple[str, Mode]:
    """(metric, 'min'|'max'): trainer.monitor, else the task's main validation metric.

    An explicit trainer.monitor_mode wins; the task's main metric goes its declared way;
    any other metric is minimised when it is a loss or one the task declares minimised."""
    metric = trainer.monitor or f"val/{task.main_metric}"
    if trainer.monitor_mode:
        return metric, trainer.monitor_mode
    if metric == f"val/{task.main_metric}":
        return metric, task.main_mode
    lower_better = metric.endswith("loss") or metric.removeprefix("val/") in task.minimized
    return metric, "min" if lower_better else "max"


def check_monitor(task: Any, trainer: Any) -> None:
    """trainer.monitor must be a metric the task reports: known before any file is written."""
    allowed = [f"val/{name}" for name in task.metric_names]
    if trainer.monitor is not None and trainer.monitor not in allowed:
        from fmctl._suggest import did_you_mean
        from fmctl.errors import ConfigError

        raise ConfigError(f"trainer.monitor: '{trainer.monitor}' is not reported by task {task.name}"
                          f"{did_you_mean(trainer.monitor, allowed)}; choose one of {', '.join(allowed)}")


class BestTracker:
    """Best value of the monitored metric and the evaluations since it improved.

    The numbers live in `progress` (best_value, best_step, best_metrics, stale_evals) so
    that they travel in the checkpoint and a resumed run keeps comparing against the same
    best; the tracker only decides. Saving the best weights is the caller's business."""

    def __init__(self, progress: Progress, metric: str, mode: Mode, patience: int | None):
        self.progress = progress
        self.metric = metric
        self.mode = mode
        self.patience = patience

    def update(self, values: dict[str, float]) -> bool:
        """Record one evaluation at progress.step; True when it is the new best."""
        current = values.get(self.metric)
        if current is None:
            from fmctl.errors import ConfigError

            raise ConfigError(f"trainer.monitor: '{self.metric}' is not among the evaluation metrics "
                              f"({', '.join(k for k in values if k != 'epoch')})")
        p = self.progress
        if p.best_value is None or (current > p.best_value if self.mode == "max" else current < p.best_value):
            p.best_value, p.best_step, p.best_metrics = current, p.step, values
            p.stale_evals = 0
            return True
        p.stale_evals += 1
        return False

    def info(self) -> dict[str, Any]:
        """What checkpoints/best/info.json records about the best model."""
        return {"step": self.progress.best_step, "monitor": self.metric, "value": self.progress.best_value}

    @property
    def should_stop(self) -> bool:
        """Early stopping: `patience` evaluations in a row without improvement."""
        return self.patience is not None and self.progress.stale_evals >= self.patience
