"""Write predictions as they come: JSONL (default, or stdout) or CSV/TSV by extension,
each optionally gzip-compressed (.gz, as inputs may be)."""
from __future__ import annotations

import csv
import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from fmctl.errors import DataError

# --out extension -> what is written; each may end in .gz as well.
OUT_KINDS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def out_kind(out: Path | None) -> tuple[str, bool]:
    """(jsonl | csv | tsv, gzip?) for --out, checked before a model is loaded so that a
    typo costs nothing: an unknown extension or a missing folder is one line, not a file
    of the wrong format under the asked-for name or a traceback after the model loaded."""
    if out is None:
        return "jsonl", False
    suffixes = [s.lower() for s in Path(out).suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    suffix = (suffixes[-2] if len(suffixes) > 1 else "") if compressed else (suffixes[-1] if suffixes else "")
    if suffix not in OUT_KINDS:
        raise DataError(f"--out: cannot write '{Path(out).name}'; predictions are written as "
                        f"{', '.join(OUT_KINDS)} (each optionally .gz)")
    folder = Path(out).parent
    if not folder.is_dir():
        raise DataError(f"--out: folder {folder} does not exist" if not folder.exists()
                        else f"--out: {folder} is not a folder")
    if Path(out).is_dir():
        raise DataError(f"--out: {out} is a folder; give a file name")
    return OUT_KINDS[suffix], compressed


class Writer:
    """One record per input item: its identifying fields, then the task's prediction
    fields (label and probabilities, tags per word, an answer span, ...), or its error.
    CSV gets one prob_<label> column per label; lists (words, tags, label sets) are
    written as JSON in their cell.

    A CSV header cannot change once written, so its `id` column comes from the input
    (`has_id`: True/False from a table's header; None while a JSONL file has not yet
    shown an object), never from whichever record happens to come first: rows are held
    back only while that is unknown."""

    def __init__(self, out: Path | None, id_fields: list[str], label_names: list[str],
                 columns: list[str] | None = None, has_id: Callable[[], bool | None] = lambda: False):
        self.out = out
        self.kind, compressed = out_kind(out)
        # Written under <out>.partial and renamed when every row is in: an interrupted or
        # failed run leaves an earlier --out file as it was, and its partial rows beside it.
        self.partial = Path(f"{out}.partial") if out is not None else None
        if out is None:
            self.handle: TextIO = sys.stdout
        elif compressed:
            self.handle = gzip.open(self.partial, "wt", encoding="utf-8", newline="")
        else:
            self.handle = open(self.partial, "w", encoding="utf-8", newline="")
        self.label_names = label_names
        self.has_id = has_id
        self.pending: list[dict[str, Any]] = []
        if self.kind in ("csv", "tsv"):
            fields = []
            for name in columns or ["label", "probabilities"]:
                fields += [f"prob_{n}" for n in label_names] if name == "probabilities" else [name]
            self.columns = ["row", *id_fields, *fields, "error"]
            self.delimiter = "\t" if self.kind == "tsv" else ","
            self.csv: Any = None

    def _header(self, with_id: bool) -> None:
        """An input's id column, if it has one, comes right after row."""
        if with_id:
            self.columns.insert(1, "id")
        self.csv = csv.DictWriter(self.handle, self.columns, delimiter=self.delimiter, extrasaction="ignore")
        self.csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if self.kind == "jsonl":
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        if self.csv is None:
            known = self.has_id()
            if known is None:
                self.pending.append(record)
                return
            self._header(known)
            self._flush_pending()
        self._row(record)

    def _flush_pending(self) -> None:
        for held in self.pending:
            self._row(held)
        self.pending = []

    def _row(self, record: dict[str, Any]) -> None:
        flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                for k, v in record.items() if k != "probabilities"}
        for name, p in (record.get("probabilities") or {}).items():
            flat[f"prob_{name}"] = p
        self.csv.writerow(flat)

    def close(self, complete: bool = True) -> None:
        """Finish the file (a gzip stream is closed properly either way); only a complete
        one takes the --out name."""
        if self.kind != "jsonl" and self.csv is None:
            self._header(bool(self.has_id()))
            self._flush_pending()
        if self.out:
            self.handle.close()
            if complete:
                os.replace(self.partial, self.out)
        else:
            self.handle.flush()
