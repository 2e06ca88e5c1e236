"""Tables printed at the end of a run, an evaluation or a sweep."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def console() -> Any:
    """Rich's console. Written to a file or CI log (no terminal, no COLUMNS), rich assumes
    80 columns and cuts table cells to '…'; logs have no width, so tables get room there."""
    import os
    import sys

    from rich.console import Console

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=200 if wide else None)


def metrics_table(metrics: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", min_width=len(title) + 4)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def per_class_table(per_class: dict[str, dict[str, float]], title: str = "per class", key: str = "label") -> Any:
    """Precision/recall/F1/support rows (classes, labels of a multi-label task, entity types)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", min_width=14)
    for column in (key, "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == key else "right")
    for label, row in per_class.items():
        table.add_row(label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    return table


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder (Hydra names them 0, 1, 2, ...), read from its manifest."""
    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        manifest_path = job / "manifest.json"
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
        rows.append({"job": int(job.name), "run_dir": str(job), "status": manifest.get("status", "unknown"),
                     "overrides": manifest.get("overrides", []), "metrics": manifest.get("metrics", {}),
                     "error": manifest.get("error"), "objective": manifest.get("objective")})
    _rank(rows)
    return rows


def _rank(rows: list[dict[str, Any]]) -> None:
    """rank 1 = the best completed job by its objective (the monitored metric)."""
    import math

    scored = [r for r in rows if r["status"] == "completed" and r.get("objective")
              and isinstance(r["objective"].get("value"), (int, float)) and not math.isnan(r["objective"]["value"])]
    maximize = bool(scored) and scored[0]["objective"]["direction"] == "maximize"
    for rank, row in enumerate(sorted(scored, key=lambda r: r["objective"]["value"], reverse=maximize), 1):
        row["rank"] = rank


def swept_overrides(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Per job, only the overrides whose value differs between jobs (what the sweep varied)."""
    parsed = [dict(o.lstrip("+").split("=", 1) for o in row["overrides"] if "=" in o) for row in rows]
    keys = sorted({k for p in parsed for k in p})
    varied = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    return [[f"{k}={p.get(k)}" for k in varied] for p in parsed]


def print_sweep_summary(sweep_dir: Path) -> int:
    """Print and save (summary.json) the jobs' final metrics; exit status 1 if any failed."""
    from rich.markup import escape
    from rich.table import Table

    from fmctl.checkpoint import atomic_write_text

    rows = sweep_rows(sweep_dir)
    metric_names = sorted({k for r in rows for k, v in r["metrics"].items() if isinstance(v, (int, float))})
    varied = swept_overrides(rows)
    table = Table(title=f"sweep {sweep_dir}", title_justify="left", min_width=len(str(sweep_dir)) + 10)
    for column in ("job", "swept", "status", *metric_names):
        table.add_column(column, justify="right" if column in metric_names else "left")
    for row, swept in zip(rows, varied):
        values = [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "" for m in metric_names]
        status = row["status"] if row["status"] != "failed" else f"failed: {row['error']}"
        table.add_row(str(row["job"]), escape(" ".join(swept)), escape(status), *values)  # [lora] is not markup
    console().print(table)
    ranked = sorted((r for r in rows if "rank" in r), key=lambda r: r["rank"])
    if ranked:
        objective = ranked[0]["objective"]
        order = Table(title=f"trials by {objective['metric']} ({objective['direction']})", title_justify="left")
        for column in ("rank", "job", objective["metric"], "swept"):
            order.add_column(column, justify="left" if column == "swept" else "right")
        for row in ranked:
            order.add_row(str(row["rank"]), str(row["job"]), f"{row['objective']['value']:.4f}",
                          escape(" ".join(varied[rows.index(row)])))
        console().print(order)
        best = ranked[0]
        console().print(f"best trial: job {best['job']} ({objective['metric']} {best['objective']['value']:.4f}) "
                        f"{escape(' '.join(varied[rows.index(best)]))} -> {best['run_dir']}", soft_wrap=True)
    atomic_write_text(sweep_dir / "summary.json", json.dumps(rows, indent=2))
    failed = sum(r["status"] != "completed" for r in rows)
    if failed:
        console().print(f"{failed} of {len(rows)} jobs did not complete; see error.txt in their folders")
    return 1 if failed else 0


def _export_rows(table: Any, manifest: dict[str, Any], prefix: str) -> None:
    """One graph's rows (a several-graph export names each graph in front)."""
    for key in ("parity", "parity_int8"):
        if key in manifest:
            p = manifest[key]
            table.add_row(f"{prefix}{p['candidate']}: max abs diff", f"{p['max_abs_diff']:.3g}")
            if p.get("label_agreement") is not None:
                table.add_row(f"{prefix}{p['candidate']}: {p.get('agreement') or 'label'} agreement",
                              f"{p['label_agreement']:.4f} ({p['examples']} ex.)")
            for name, value in (p.get("figures") or {}).items():
                table.add_row(f"{prefix}{p['candidate']}: {name.replace('_', ' ')}", f"{value:.6f}")
    for key in ("translation_parity", "translation_parity_int8"):
        if key in manifest:
            t = manifest[key]
            which = "int8" if key.endswith("int8") else "fp32"
            table.add_row(f"{prefix}onnxruntime {which}: greedy translations = PyTorch's",
                          f"{t['identical']} of {t['examples']}")
    evaluation = manifest.get("evaluation", {})
    metric = evaluation.get("metric") or "accuracy"
    for name, value in (evaluation.get("scores") or evaluation.get("accuracy") or {}).items():
        if value is not None:
            table.add_row(f"{prefix}val {metric} {name}", f"{value:.4f}")
    quantization = manifest.get("quantization")
    if quantization:
        table.add_row(f"{prefix}size fp32 -> int8", f"{quantization['fp32_size_bytes'] / 1e6:.2f} MB -> "
                                                    f"{quantization['size_bytes'] / 1e6:.2f} MB")
        settings = quantization.get("settings", {})
        table.add_row(f"{prefix}int8 settings", f"{settings.get('int8_path', '?')} ({settings.get('chosen_for', '?')}), "
                                                f"{quantization.get('weights', '')}")
        table.add_row(f"{prefix}nodes kept in fp32", str(len(quantization.get("fp32_nodes", []))))
    for name, row in (manifest.get("latency", {}).get("results") or {}).items():
        table.add_row(f"{prefix}latency {name}", f"{row['batch_1_ms']:.2f} ms @1, {row['batch_32_ms']:.2f} ms @32")


def export_table(manifest: dict[str, Any]) -> Any:
    """The figures that vouch for an export: parity, validation accuracy, latency."""
    from rich.table import Table

    title = f"export {manifest['format']}{' ' + manifest['quantize'] if manifest.get('quantize') else ''}"
    table = Table(title=title, title_justify="left", min_width=len(title) + 4)
    table.add_column("check")
    table.add_column("value", justify="right")
    for graph, entries in _checked_sections(manifest).items():
        _export_rows(table, entries, f"{graph}: " if graph else "")
    return table


def _checked_sections(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Graph name -> its checks where each graph was checked on its own (CLIP's towers);
    otherwise the whole export's checks under "". Why: `graphs` of a decoder export (clm,
    translation) lists each graph's inputs and outputs, not checks of its own."""
    graphs = manifest.get("graphs") or {}
    checked = ("parity", "evaluation", "quantization", "latency")
    if graphs and all(isinstance(e, dict) and any(k in e for k in checked) for e in graphs.values()):
        return graphs
    return {"": manifest}


def recipe_rows() -> list[tuple[str, str, str, str, str]]:
    """`fmctl recipes`: (name, verb, task, backbone, purpose) per recipe, the verb read from
    its choices (a customize list, a pretraining task), the purpose from its header comment."""
    from fmctl import tasks
    from fmctl.config.compose import recipe_summaries

    rows = []
    for recipe in recipe_summaries():
        task = str(recipe.picks.get("task", ""))
        pretrains = task in tasks.names() and tasks.declaration(task).pretraining
        verb = "customize" if "customize" in recipe.picks else "pretrain" if pretrains else "finetune"
        rows.append((recipe.name, verb, task or "-", str(recipe.picks.get("backbone", "-")), recipe.purpose))
    return rows
