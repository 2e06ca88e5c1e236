"""Write an evaluation folder in one piece: metrics.json, predictions.jsonl, plot."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fmctl.evaluate.plots import confusion_matrix_png


def write_eval_folder(target: Path, result: dict[str, Any], metrics: Any, rows: list[Any], label_names: list[str],
                      task: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".eval-", dir=target.parent))
    try:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        preds, labels, probs = metrics.arrays()
        with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as handle:
            for i, row in enumerate(rows):
                record = dict(task.example_fields(row))
                record["label"] = row.label
                record["prediction"] = label_names[int(preds[i])]
                record["probabilities"] = {name: round(float(p), 6) for name, p in zip(label_names, probs[i])}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        confusion_matrix_png(result["confusion_matrix"], label_names, tmp / "confusion_matrix.png")
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
