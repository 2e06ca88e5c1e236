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


def write_eval_folder(target: Path, result: dict[str, Any], metrics: Any, rows: list[Any], task: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".eval-", dir=target.parent))
    try:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as handle:
            for record in metrics.records(rows, task.example_fields):
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        metrics.write_files(tmp, result)
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
