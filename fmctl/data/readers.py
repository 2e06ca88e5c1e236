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


def read_rows(path: Path, columns: dict[str, str | None], fmt: str = "auto",
              keys: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows as dicts keyed by the roles in `columns` (e.g. {'text': 'review', 'label': 'stars'}).

    Column names are matched exactly, then ignoring case and surrounding spaces. Each row
    also carries '_line', the line (or row) number to quote in later error messages.
    A CSV/TSV header is checked before any row: a used name that appears twice would
    otherwise silently read the last copy. JSONL columns are the keys of all records, not
    just the first (records often leave out a field). `keys` (role -> setting name) is what
    messages call the setting that chooses a column (default data.<role>_column).
    """
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a table file (.csv, .tsv, .jsonl, .parquet)")
    fmt = detect_format(path, fmt)
    wanted = {role: name for role, name in columns.items() if name is not None}
    mapping: dict[str, str] | None = None
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        header = _read_header(path, delimiter)
        if header is None:
            raise DataError(f"{path}: no examples (the file is empty or holds only a header)")
        mapping = _check_header(path, header, wanted, fmt, keys)
        raw = _read_delimited(path, delimiter)
    elif fmt == "jsonl":
        raw = _read_jsonl(path)
    elif fmt == "parquet":
        names, raw = _read_parquet(path)
        mapping = _check_header(path, names, wanted, fmt, keys)
    else:
        raise DataError(f"{path}: format '{fmt}' is not a table format ({', '.join(TABLE_FORMATS)})")
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, dict[str, Any]]] = []  # JSONL records read before every column was found
    seen: dict[str, None] = {}  # every key met so far, in order, for the error message
    partial: dict[str, str] = {}
    for line, record in raw:
        if mapping is None:
            seen.update(dict.fromkeys(record))
            partial.update(_match_some(path, list(record), {r: n for r, n in wanted.items() if r not in partial},
                                       keys))
            pending.append((line, record))
            if len(partial) < len(wanted):
                continue
            mapping = partial
            for held_line, held in pending:
                rows.append(_pick(path, held_line, held, mapping, keys))
            pending = []
            continue
        rows.append(_pick(path, line, record, mapping, keys))
    if mapping is None and pending:
        _match_columns(path, list(seen), wanted, keys)  # raises: a column no record has
    if not rows:
        raise DataError(f"{path}: no examples (the file is empty or holds only a header)")
    return rows


def _pick(path: Path, line: int, record: dict[str, Any], mapping: dict[str, str],
          keys: dict[str, str] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"_line": line}
    for role, key in mapping.items():
        if key not in record:
            raise DataError(f"{path}:{line}: row has no field '{key}' ({_setting(role, keys)})")
        row[role] = record[key]
    return row


def _setting(role: str, keys: dict[str, str] | None) -> str:
    """The setting that chooses the column for `role`: fine-tuning's data.<role>_column
    unless the caller names its own (predict's --text-column, prepare's text_column)."""
    return (keys or {}).get(role, f"data.{role}_column")


def _match_columns(path: Path, available: list[str], wanted: dict[str, str],
                   keys: dict[str, str] | None = None) -> dict[str, str]:
    """The column for each role: its exact name, else the one name equal ignoring case and
    surrounding spaces (two such names, e.g. 'Text' and 'text ', is ambiguous)."""
    mapping = _match_some(path, available, wanted, keys)
    for role, name in wanted.items():
        if role not in mapping:
            shown = ", ".join(str(a) for a in available[:20])
            raise DataError(f"{path}: no column '{name}' for {_setting(role, keys)}{did_you_mean(name, available)}; "
                            f"columns are: {shown}")
    return mapping


def _match_some(path: Path, available: list[str], wanted: dict[str, str],
                keys: dict[str, str] | None = None) -> dict[str, str]:
    """Like _match_columns, leaving out the roles whose column is not there."""
    mapping = {}
    for role, name in wanted.items():
        if name in available:
            mapping[role] = name
            continue
        close = list(dict.fromkeys(a for a in available if str(a).strip().lower() == name.strip().lower()))
        if len(close) > 1:
            places = " and ".join(f"'{a}' (column {available.index(a) + 1})" for a in close)
            raise DataError(f"{path}: {_setting(role, keys)} '{name}' matches {places} ignoring case and spaces; "
                            f"set it to one of them exactly")
        if close:
            mapping[role] = close[0]
    return mapping


_OTHER_DELIMITERS = {"csv": ((";", "';'"), ("\t", "tab"), ("|", "'|'")), "tsv": ((",", "comma"), (";", "';'"), ("|", "'|'"))}


def _check_header(path: Path, header: list[str], wanted: dict[str, str], fmt: str,
                  keys: dict[str, str] | None = None) -> dict[str, str]:
    """The role -> column mapping, after the checks a header allows before any row is read:
    a one-column header that is really another delimiter's, and a used name that appears
    more than once (a dict keeps the last copy, so the first would be silently dropped).
    Duplicates of columns no role reads are left alone: they change nothing."""
    if len(header) == 1 and not set(wanted.values()) <= set(header):
        for char, name in _OTHER_DELIMITERS.get(fmt, ()):
            if char in str(header[0]):
                raise DataError(f"{path}: the header {str(header[0])[:80]!r} is one column that looks "
                                f"{name}-delimited; {_delimiter_fix(char)}")
    mapping = _match_columns(path, header, wanted, keys)
    for role, key in mapping.items():
        places = [i + 1 for i, name in enumerate(header) if name == key]
        if len(places) > 1:
            times = "twice" if len(places) == 2 else f"{len(places)} times"
            listed = ", ".join(str(p) for p in places[:-1]) + f" and {places[-1]}"
            raise DataError(f"{path}: column '{key}' appears {times} in the header (columns {listed}); "
                            f"rename the copies so {_setting(role, keys)} names one column")
    return mapping


def _delimiter_fix(char: str) -> str:
    if char == "\t":
        return "name the file .tsv or set data.format=tsv"
    if char == ",":
        return "name the file .csv or set data.format=csv"
    return f"re-save it with commas, e.g. pandas.read_csv(path, sep='{char}').to_csv(new_path, index=False)"


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


def _read_header(path: Path, delimiter: str) -> list[str] | None:
    """The header's names (stripped), or None for an empty file; read on its own so the
    header can be checked before any row."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

    def first():
        with _open_text(path) as handle:
            try:
                yield next(csv.reader(handle, delimiter=delimiter), None)
            except csv.Error as exc:
                raise DataError(f"{path}:1: malformed {'CSV' if delimiter == ',' else 'TSV'} header ({exc})") from None

    header = next(_decode_guard(path, first))
    return None if not header else [f.strip() for f in header]


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


def _read_parquet(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """The schema's column names (checked like a CSV header) and the rows."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet ({' '.join(str(exc).split())[:200]})") from None
    names = [str(n) for n in table.column_names]
    return names, ((i, record) for i, record in enumerate(table.to_pylist(), 1))


def cell_text(value: Any, path: object, line: int, column: str) -> str:
    """A text cell as a string. Numbers read as text; an object, list or true/false is
    refused, because its Python repr would train on a made-up string (and may carry the
    label along, as in {"text": ..., "stars": 5})."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars from Parquet
        value = value.tolist()
    kind = value_kind(value)
    if kind:
        raise DataError(f"{path}:{line}: column '{column}' holds {kind}, not text")
    return str(value)


def value_kind(value: Any) -> str | None:
    """'an object' / 'a list' / 'a boolean' for values that are not text or a number."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    return None
