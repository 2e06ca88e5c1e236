"""Write an evaluation folder in one piece: metrics.json, predictions.jsonl and the
task's own extra files (a plot, SQuAD-format predictions, ...).

What goes into each file is the task's business (its metrics object); this module only
makes sure a reader never sees a half-written eval/ folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def write_eval_folder(target: Path, result: dict[str, Any], metrics: Any, rows: list[Any], task: Any,
                      extras: dict[str, tuple[dict[str, Any], Any, list[Any]]] | None = None) -> None:
    """`extras`: name -> (report, metrics, rows) of further evaluations, each written to
    its own sub-folder (eval/zero_shot/), inside the same all-or-nothing replacement."""
    tmp = Path(tempfile.mkdtemp(prefix=".eval-", dir=target.parent))
    try:
        _write(tmp, result, metrics, rows, task.example_fields)
        for name, (report, scored, scored_rows) in (extras or {}).items():
            (tmp / name).mkdir()
            _write(tmp / name, report, scored, scored_rows, _image_of)
        if target.exists():
            old = target.with_name(".eval-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(folder: Path, result: dict[str, Any], metrics: Any, rows: list[Any], example_fields: Any) -> None:
    (folder / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    with open(folder / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for record in metrics.records(rows, example_fields):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    metrics.write_files(folder, result)


def _image_of(row: Any) -> dict[str, Any]:
    """A further evaluation's rows are image files of a class folder (zero-shot)."""
    return {"image": str(row.path)}
