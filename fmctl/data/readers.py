"""Read labelled tables (CSV, TSV, JSONL, Parquet; optionally gzip'd) into rows.

Real files are messy: a UTF-8 byte-order mark, padded header names, quoted fields with
newlines, columns named in another case. Every failure names the file (and the line or
column) and what was expected, because the user has to go and fix that file.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fmctl._suggest import did_you_mean
from fmctl.errors import DataError

TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "imagefolder"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise DataError(f"{path}: cannot tell the file format from its name; use .csv, .tsv, .jsonl or .parquet "
                    f"(optionally .gz), or set data.format")


def read_rows(path: Path, columns: dict[str, str | None], fmt: str = "auto") -> list[dict[str, Any]]:
    """Rows as dicts keyed by the roles in `columns` (e.g. {'text': 'review', 'label': 'stars'}).

    Column names are matched exactly, then ignoring case and surrounding spaces. Each row
    also carries '_line', the line (or row) number to quote in later error messages.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a table file (.csv, .tsv, .jsonl, .parquet)")
    fmt = detect_format(path, fmt)
    wanted = {role: name for role, name in columns.items() if name is not None}
    if fmt in ("csv", "tsv"):
        raw = _read_delimited(path, "," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        raw = _read_jsonl(path)
    elif fmt == "parquet":
        raw = _read_parquet(path)
    else:
        raise DataError(f"{path}: format '{fmt}' is not a table format ({', '.join(TABLE_FORMATS)})")
    rows: list[dict[str, Any]] = []
    mapping: dict[str, str] | None = None
    for line, record in raw:
        if mapping is None:
            mapping = _match_columns(path, list(record.keys()), wanted)
        row = {"_line": line}
        for role, key in mapping.items():
            if key not in record:
                raise DataError(f"{path}:{line}: row has no field '{key}'")
            row[role] = record[key]
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no examples (the file is empty or holds only a header)")
    return rows


def _match_columns(path: Path, available: list[str], wanted: dict[str, str]) -> dict[str, str]:
    normalised = {str(a).strip().lower(): a for a in available}
    mapping = {}
    for role, name in wanted.items():
        if name in available:
            mapping[role] = name
        elif name.strip().lower() in normalised:
            mapping[role] = normalised[name.strip().lower()]
        else:
            shown = ", ".join(str(a) for a in available[:20])
            raise DataError(f"{path}: no column '{name}' for data.{role}_column{did_you_mean(name, available)}; "
                            f"columns are: {shown}")
    return mapping


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _decode_guard(path: Path, fn):
    try:
        yield from fn()
    except UnicodeDecodeError:
        raise DataError(f"{path}:{_first_bad_line(path)}: not UTF-8 text; re-save the file as UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def _first_bad_line(path: Path) -> int:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

    def rows():
        with _open_text(path) as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if reader.fieldnames is None:
                return
            reader.fieldnames = [f.strip() if isinstance(f, str) else f for f in reader.fieldnames]
            try:
                for record in reader:
                    if None in record:  # more cells than header names
                        raise DataError(f"{path}:{reader.line_num}: {len(reader.fieldnames) + len(record[None])} "
                                        f"fields but the header has {len(reader.fieldnames)}; check quoting")
                    if all(v in (None, "") for v in record.values()):
                        continue  # blank line
                    yield reader.line_num, record
            except csv.Error as exc:
                raise DataError(f"{path}:{reader.line_num}: malformed {'CSV' if delimiter == ',' else 'TSV'} ({exc})") from None

    return _decode_guard(path, rows)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    def rows():
        with _open_text(path) as handle:
            first = handle.read(1)
            rest = handle.read() if first == "[" else None
            if first == "[":  # a JSON array of objects, as some tools write .json
                try:
                    records = json.loads(first + rest)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
                for i, record in enumerate(records, 1):
                    if not isinstance(record, dict):
                        raise DataError(f"{path}: item {i} is not a JSON object")
                    yield i, record
                return
            for number, line in enumerate(_prepend(first, handle), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object per line")
                yield number, record

    return _decode_guard(path, rows)


def _prepend(first: str, handle: io.TextIOBase) -> Iterator[str]:
    lines = iter(handle)
    head = next(lines, "")
    yield first + head
    yield from lines


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet ({' '.join(str(exc).split())[:200]})") from None
    for i, record in enumerate(table.to_pylist(), 1):
        yield i, record
