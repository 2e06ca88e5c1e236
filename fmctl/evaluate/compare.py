"""`fmctl compare RUN RUN ... [metric=val/accuracy] [out=DIR]`: the runs' final metrics
in one table, the config keys whose values differ, and one plot of their validation
curves (from each run's metrics.jsonl).

Runs of different tasks are compared on what they share (the metrics every run has, a
validation curve every run logs); what was left out is listed with the runs it came from.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fmctl.errors import ConfigError, RunFolderError

# Keys that differ between any two runs without saying anything about them.
_IGNORED_KEYS = ("run_dir", "overwrite")


@dataclass
class CompareConfig:
    # The validation metric plotted against steps (val/<name>); null: the main metric the
    # runs' tasks share, else val/loss when every run logs it.
    metric: Optional[str] = None
    # Folder for compare.json, compare.md and validation_curves.png; null: runs/compare/<timestamp>.
    out: Optional[str] = None


def compare(args: list[str], console: Any = None) -> dict[str, Any]:
    from fmctl import report
    from fmctl.checkpoint import atomic_write_text
    from fmctl.config.compose import schema_from_overrides

    out = console or report.console()
    folders = [Path(a).expanduser() for a in args if "=" not in a]
    cfg = schema_from_overrides(CompareConfig, [a for a in args if "=" in a])
    if len(folders) < 2:
        raise ConfigError("compare: give two or more run folders (fmctl compare RUN RUN ...)")
    runs = [_read_run(folder) for folder in folders]
    _name_runs(runs)
    shared, left_out = _shared_metrics(runs)
    metric, note = _curve_metric(runs, cfg.metric)
    result = {"runs": [{k: r[k] for k in ("name", "run_dir", "task", "status", "metrics")} for r in runs],
              "shared_metrics": shared, "left_out": left_out, "config_differences": _differences(runs),
              "curve_metric": metric, "notes": [note] if note else []}
    target = Path(cfg.out).expanduser() if cfg.out else Path("runs") / "compare" / time.strftime("%Y-%m-%d_%H-%M-%S")
    if metric is not None:
        _plot(runs, metric, target / "validation_curves.png")
    atomic_write_text(target / "compare.json", json.dumps(result, indent=2))
    text = markdown(result)
    atomic_write_text(target / "compare.md", text)
    out.print(text, markup=False, highlight=False, soft_wrap=True)
    out.print(f"written: {target / 'compare.json'}, compare.md" + (", validation_curves.png" if metric else ""),
              soft_wrap=True)
    return result


def _read_run(folder: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    if not (folder / "config.yaml").is_file() or not (folder / "manifest.json").is_file():
        raise RunFolderError(f"{folder}: not an fmctl run folder (needs config.yaml and manifest.json)")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    config = _flatten(OmegaConf.to_container(OmegaConf.load(folder / "config.yaml")))
    curves: dict[str, list[tuple[int, float]]] = {}
    log = folder / "metrics.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn last line of an interrupted run
        if event.get("event") == "eval":
            for key, value in event.items():
                if key.startswith("val/") and isinstance(value, (int, float)):
                    curves.setdefault(key, []).append((int(event["step"]), float(value)))
    metrics = {k: v for k, v in (manifest.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return {"name": folder.name, "run_dir": str(folder), "task": manifest.get("task") or config.get("task.name"),
            "status": manifest.get("status", "unknown"), "metrics": metrics, "config": config, "curves": curves}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def _name_runs(runs: list[dict[str, Any]]) -> None:
    """Each run's folder name, with its parent's when two runs share one."""
    names = [r["name"] for r in runs]
    for run in runs:
        if names.count(run["name"]) > 1:
            path = Path(run["run_dir"])
            run["name"] = f"{path.parent.name}/{path.name}"


def _shared_metrics(runs: list[dict[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    """(metrics every run has, metric -> the runs that alone have it)."""
    every = set.intersection(*(set(r["metrics"]) for r in runs))
    order = [k for r in runs for k in r["metrics"]]
    shared = [k for k in dict.fromkeys(order) if k in every]
    left_out = {k: [r["name"] for r in runs if k in r["metrics"]] for k in dict.fromkeys(order) if k not in every}
    return shared, left_out


def _curve_metric(runs: list[dict[str, Any]], asked: str | None) -> tuple[str | None, str | None]:
    """The validation metric to plot, and a note when it had to be chosen for the runs."""
    from fmctl import tasks

    logged = set.intersection(*(set(r["curves"]) for r in runs))
    if asked is not None:
        if asked not in logged:
            missing = [r["name"] for r in runs if asked not in r["curves"]]
            raise ConfigError(f"metric: '{asked}' is not logged by {', '.join(missing)}; every run logs "
                              f"{', '.join(sorted(logged)) or 'no common validation metric'}")
        return asked, None
    names = {r["task"] for r in runs}
    if len(names) == 1 and next(iter(names)) in tasks.names():
        main = f"val/{tasks.declaration(next(iter(names))).main_metric}"
        if main in logged:
            return main, None
    if "val/loss" in logged:
        tasks_named = ", ".join(sorted(map(str, names)))
        return "val/loss", f"runs of tasks {tasks_named}: validation curves of their shared val/loss"
    return None, "no validation metric is logged by every run; no curve plot"


def _differences(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """key -> run name -> value, for the config keys whose values differ (absent: None)."""
    keys = dict.fromkeys(k for r in runs for k in r["config"])
    found = {}
    for key in keys:
        if key in _IGNORED_KEYS:
            continue
        values = {r["name"]: r["config"].get(key) for r in runs}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            found[key] = values
    return found


def markdown(result: dict[str, Any]) -> str:
    names = [r["name"] for r in result["runs"]]
    lines = ["| run | task | status | " + " | ".join(result["shared_metrics"]) + " |",
             "|---|---|---|" + "---|" * len(result["shared_metrics"])]
    for run in result["runs"]:
        values = [f"{run['metrics'][m]:.4f}" for m in result["shared_metrics"]]
        lines.append(f"| {run['name']} | {run['task']} | {run['status']} | " + " | ".join(values) + " |")
    if result["left_out"]:
        lines += ["", "left out (not in every run): " + "; ".join(f"{k} ({', '.join(v)})"
                                                               for k, v in result["left_out"].items())]
    lines += ["", "| config key | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, values in result["config_differences"].items():
        lines.append(f"| {key} | " + " | ".join(_show(values[n]) for n in names) + " |")
    lines += ["", *result["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def _show(value: Any) -> str:
    return "-" if value is None else str(value).replace("|", "\\|")


def _plot(runs: list[dict[str, Any]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fmctl.evaluate.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for run in runs:
        steps, values = zip(*run["curves"][metric])
        ax.plot(steps, values, marker="o", markersize=3, label=run["name"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.set_title(f"validation curves: {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
