"""Source-target text pairs for translation and other seq2seq jobs.

Tables with a header (CSV, TSV, JSONL, Parquet: data.source_column, data.target_column),
or data.format=pairs: headerless `source<TAB>target` lines as parallel corpora are often
shipped (extra columns, such as attributions, are ignored). A pair with an empty side
would teach the model to emit nothing, so it is an error naming the line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.config.schema import DataConfig
from fmctl.data.readers import _decode_guard, _open_text, cell_text, read_rows
from fmctl.errors import DataError


@dataclass
class PairRow:
    source: str
    target: str
    line: int
    path: Path


def read_pairs(path: Path, data: DataConfig) -> list[PairRow]:
    if data.format == "pairs":
        if not path.exists():
            raise DataError(f"{path}: file not found")
        raw = list(_decode_guard(path, lambda: _headerless(path)))
        if not raw:
            raise DataError(f"{path}: no examples (the file is empty)")
        columns = ("column 1", "column 2")
    else:
        raw = [(r["_line"], cell_text(r["source"], path, r["_line"], data.source_column),
                cell_text(r["target"], path, r["_line"], data.target_column))
               for r in read_rows(path, {"source": data.source_column, "target": data.target_column}, data.format)]
        columns = (f"column '{data.source_column}'", f"column '{data.target_column}'")
    rows = []
    for line, source, target in raw:
        texts = []
        for value, side, column in ((source, "source", columns[0]), (target, "target", columns[1])):
            text = _as_text(value)
            if not text.strip():
                raise DataError(f"{path}:{line}: empty {side} text ({column}); every pair needs both sides")
            texts.append(text.strip())
        rows.append(PairRow(texts[0], texts[1], line, path))
    return rows


def _headerless(path: Path):
    with _open_text(path) as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise DataError(f"{path}:{number}: expected source<TAB>target, found no tab")
            yield number, fields[0], fields[1]


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)
