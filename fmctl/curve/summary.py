"""A learning curve's results, read back from its cells' run folders: the main metric per
start and budget (mean and sample standard deviation over the seeds), the headline
"labels that scratch needs to match <start> at N labels", a table, a plot and a JSON file.
"""
from __future__ import annotations

import json
import math
from typing import Any

from fmctl.curve.cells import cell_dir
from fmctl.curve.plan import Plan


def collect(plan: Plan) -> dict[str, Any]:
    """Every cell's outcome and the aggregate per (start, budget)."""
    cells = []
    for cell in plan.cells:
        path = cell_dir(plan, cell) / "manifest.json"
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        cells.append({"cell": cell.name, "start": cell.start, "budget": cell.budget, "seed": cell.seed,
                      "status": record.get("status", "not run"), "error": record.get("error"),
                      "labels": (record.get("examples") or {}).get("train"), "metrics": record.get("metrics") or {},
                      "run_dir": str(cell_dir(plan, cell))})
    metric = _metric(plan, cells)
    points = []
    for start in plan.starts:
        for budget in plan.budgets:
            group = [c for c in cells if c["start"] == start.label and c["budget"] == budget]
            values = [c["metrics"][metric] for c in group if c["status"] == "completed" and metric in c["metrics"]]
            labels = next((c["labels"] for c in group if c["labels"]), budget or plan.train_examples)
            points.append({"start": start.label, "budget": budget if budget is not None else "all", "labels": labels,
                           "n": len(values), "failed": sum(c["status"] == "failed" for c in group),
                           "mean": _mean(values), "std": _std(values), "values": values})
    return {"task": plan.task, "metric": metric, "mode": plan.main_mode, "train_examples": plan.train_examples,
            "starts": [{"label": s.label, "spec": s.spec} for s in plan.starts], "points": points, "cells": cells,
            "headlines": headlines(points, plan.main_mode), "notes": plan.notes}


def _metric(plan: Plan, cells: list[dict[str, Any]]) -> str:
    """test/<main metric> when every completed cell has a test score, else val/<main>."""
    done = [c for c in cells if c["status"] == "completed"]
    test = f"test/{plan.main_metric}"
    return test if done and all(test in c["metrics"] for c in done) else f"val/{plan.main_metric}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def headlines(points: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """For each pretrained start at each budget: how many labels scratch needs to score as
    well, interpolated between scratch's budgets on a log scale of labels."""
    scratch = sorted((p for p in points if p["start"] == "scratch" and p["mean"] is not None),
                     key=lambda p: p["labels"])
    sign = 1.0 if mode == "max" else -1.0
    found = []
    for point in points:
        if point["start"] == "scratch" or point["mean"] is None or not scratch:
            continue
        target = point["mean"]
        entry = {"start": point["start"], "labels": point["labels"], "target": target}
        reached = [i for i, p in enumerate(scratch) if sign * p["mean"] >= sign * target]
        if not reached:
            entry.update(scratch_labels=None, reached=False, best_scratch=max(sign * p["mean"] for p in scratch) * sign,
                         largest_budget=scratch[-1]["labels"])
        elif reached[0] == 0:
            entry.update(scratch_labels=scratch[0]["labels"], reached=True, at_most=True)
        else:
            lo, hi = scratch[reached[0] - 1], scratch[reached[0]]
            share = (target - lo["mean"]) / (hi["mean"] - lo["mean"])
            logs = math.log(lo["labels"]) + share * (math.log(hi["labels"]) - math.log(lo["labels"]))
            entry.update(scratch_labels=round(math.exp(logs)), reached=True, between=[lo["labels"], hi["labels"]])
        found.append(entry)
    return found


def headline_text(entry: dict[str, Any], metric: str) -> str:
    head = (f"labels that scratch needs to match {entry['start']} at {entry['labels']} labels "
            f"({metric} {entry['target']:.3f}): ")
    if not entry["reached"]:
        return head + (f"more than {entry['largest_budget']} (scratch's best: {entry['best_scratch']:.3f}; the curve "
                       f"does not reach it)")
    if entry.get("at_most"):
        return head + f"{entry['scratch_labels']} or fewer (scratch already matches it at its smallest budget)"
    lo, hi = entry["between"]
    return head + f"about {entry['scratch_labels']} (interpolated between {lo} and {hi}, log scale)"


def markdown(summary: dict[str, Any]) -> str:
    """The table: one row per start, one column per budget, mean ± std (seeds)."""
    budgets = []
    for point in summary["points"]:
        if point["budget"] not in [b for b, _ in budgets]:
            budgets.append((point["budget"], point["labels"]))
    lines = [f"{summary['metric']} (mean ± std over seeds; labels in brackets)", "",
             "| start | " + " | ".join(f"{b} ({n})" for b, n in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for start in summary["starts"]:
        cells = []
        for budget, _ in budgets:
            point = next(p for p in summary["points"] if p["start"] == start["label"] and p["budget"] == budget)
            text = f"{point['mean']:.3f} ± {point['std']:.3f} ({point['n']})" if point["mean"] is not None else "-"
            cells.append(text + (f", {point['failed']} failed" if point["failed"] else ""))
        lines.append(f"| {start['label']} | " + " | ".join(cells) + " |")
    lines += ["", *[headline_text(h, summary["metric"]) for h in summary["headlines"]]]
    return "\n".join(lines) + "\n"
