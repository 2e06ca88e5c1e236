"""Write predictions as they come: JSONL (default, or stdout) or CSV/TSV by extension."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO


class Writer:
    """One record per input item: its identifying fields, then the task's prediction
    fields (label and probabilities, tags per word, an answer span, ...), or its error.
    CSV gets one prob_<label> column per label; lists (words, tags, label sets) are
    written as JSON in their cell."""

    def __init__(self, out: Path | None, id_fields: list[str], label_names: list[str],
                 columns: list[str] | None = None):
        self.out = out
        self.handle: TextIO = open(out, "w", encoding="utf-8", newline="") if out else sys.stdout
        suffix = out.suffix.lower() if out else ".jsonl"
        self.kind = "csv" if suffix in (".csv", ".tsv") else "jsonl"
        self.label_names = label_names
        if self.kind == "csv":
            fields = []
            for name in columns or ["label", "probabilities"]:
                fields += [f"prob_{n}" for n in label_names] if name == "probabilities" else [name]
            self.columns = ["row", *id_fields, *fields, "error"]
            self.delimiter = "\t" if suffix == ".tsv" else ","
            self.csv: Any = None

    def _header(self, first: dict[str, Any] | None) -> None:
        """Written with the first record: an input's id column, if it has one, comes after row."""
        if first is not None and "id" in first:
            self.columns.insert(1, "id")
        self.csv = csv.DictWriter(self.handle, self.columns, delimiter=self.delimiter, extrasaction="ignore")
        self.csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if self.kind == "jsonl":
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        if self.csv is None:
            self._header(record)
        flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                for k, v in record.items() if k != "probabilities"}
        for name, p in (record.get("probabilities") or {}).items():
            flat[f"prob_{name}"] = p
        self.csv.writerow(flat)

    def close(self) -> None:
        if self.kind == "csv" and self.csv is None:
            self._header(None)
        if self.out:
            self.handle.close()
        else:
            self.handle.flush()
