"""Stream what to predict: table rows, lines of text, or image files, one item at a time.

Nothing is read into memory whole, so a file larger than memory works. A problem with a
single row (a missing field, an empty line in a JSONL file) becomes that item's error and
the rest go on; a problem with the whole file (no such column in its header) is one
DataError, since every row would fail the same way.
"""
from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from fmctl.data.images import IMAGE_EXTENSIONS, image_files
from fmctl.data.readers import _match_columns, detect_format, value_kind
from fmctl.errors import DataError


@dataclass
class Item:
    row: int                                   # 1-based position in the input
    where: str                                 # 'file:line' or the image path, for messages
    fields: dict[str, Any] = field(default_factory=dict)   # what identifies it in the output
    value: Any = None                          # {'text', 'text_pair'} or an image Path
    error: str | None = None


class Progress:
    """How far through the input we are (bytes of a file, or images of a folder), and
    whether it has an id column: known from a table's header, and for JSONL from its first
    object (None until then), so that a CSV output's header does not depend on row 1."""

    def __init__(self, total: int | None, position: Callable[[], int] | None = None, unit: str = "bytes",
                 has_id: bool | None = False):
        self.total = total
        self.position = position
        self.unit = unit
        self.has_id = has_id


def text_items(path: Path, text_column: str, pair_column: str | None, fmt: str = "auto",
               columns: dict[str, str] | None = None, words: bool = False) -> tuple[Iterator[Item], Progress]:
    """Rows of a CSV/TSV/JSONL/Parquet file (optionally .gz), or lines of a .txt file.
    `columns` (role -> column, e.g. question/context for QA) replaces text/pair columns;
    `words`: a JSON list of words is a value (token classification), not an error."""
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: is a folder; give a file")
    if fmt == "auto" and path.suffix.lower() in (".txt", ".text"):
        fmt = "txt"
    fmt = detect_format(path, fmt) if fmt != "txt" else fmt
    raw = open(path, "rb")
    stream = gzip.open(raw) if path.suffix.lower() == ".gz" else raw
    progress = Progress(path.stat().st_size, raw.tell)
    handle = _text(stream, path)
    wanted = columns or {"text": text_column, **({"text_pair": pair_column} if pair_column else {})}
    if fmt == "txt" and set(wanted) - {"text", "source", "prompt"}:
        raise DataError(f"{path}: a .txt file holds one text a line; this model needs the columns "
                        f"{', '.join(wanted.values())}: give a CSV, TSV, JSONL or Parquet file")
    if fmt in ("csv", "tsv"):
        reader = csv.DictReader(handle, delimiter="," if fmt == "csv" else "\t")
        try:
            header = [h.strip() if isinstance(h, str) else h for h in (reader.fieldnames or [])]
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text; re-save the file as UTF-8") from None
        if not header:
            raise DataError(f"{path}: empty file; expected a header row with a '{text_column}' column")
        reader.fieldnames = header
        mapping = _columns(path, header, wanted)
        ident = _id_column(header, mapping)
        progress.has_id = ident is not None
        return _guard(path, _rows_from_dicts(path, reader, mapping, lambda: reader.line_num, ident, header, words),
                      raw), progress
    if fmt == "jsonl":
        progress.has_id = None
        return _guard(path, _jsonl(path, handle, wanted, progress, words), raw), progress
    if fmt == "txt":
        return _guard(path, _lines(path, handle, next(iter(wanted))), raw), progress
    if fmt == "parquet":
        raw.close()
        return _parquet(path, wanted, words)
    raise DataError(f"{path}: cannot predict from format '{fmt}'; use .csv, .tsv, .jsonl, .parquet or .txt")


def _text(stream: Any, path: Path) -> Any:
    import io

    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def _rows_from_dicts(path: Path, records: Any, mapping: dict[str, str], line: Callable[[], int],
                     ident: str | None = None, header: list[str] | None = None, words: bool = False
                     ) -> Iterator[Item]:
    for row, record in enumerate(records, 1):
        where = f"{path}:{line()}"
        if None in record:
            item = Item(row, where, error=f"{where}: more fields than the header has; check quoting")
            yield _with_id(item, {ident: _ragged_id(record, ident, header)} if ident else record, ident)
            continue
        yield _with_id(_item(row, where, {role: record.get(key) for role, key in mapping.items()}, mapping, words),
                       record, ident)


def _ragged_id(record: dict[Any, Any], ident: str, header: list[str] | None) -> Any:
    """A row with more fields than the header still names its id where no stray delimiter
    can have shifted it: as the first column (the extra fields come after it) or the last
    (it is the row's last field). In between, which field is the id cannot be told: None."""
    if not header or header[0] == ident:
        return record.get(ident)
    if header[-1] == ident:
        return record[None][-1]
    return None

def _id_column(available: list[str], mapping: dict[str, Any]) -> str | None:
    """An input's `id` column (any case), carried into the output so results join back to
    their rows; None when there is none or it is one of the model's own inputs."""
    found = next((a for a in available if str(a).strip().lower() == "id"), None)
    return None if found is None or found in mapping.values() else found


def _with_id(item: Item, record: dict[str, Any], ident: str | None) -> Item:
    if ident is not None:
        item.fields = {"id": record.get(ident), **item.fields}
    return item


def _item(row: int, where: str, values: dict[str, Any], names: dict[str, str], words: bool = False) -> Item:
    fields = {k: v for k, v in values.items() if v is not None}
    missing = [names[role] for role, v in values.items() if v is None]
    if missing:
        return Item(row, where, fields, error=f"{where}: no value for column '{missing[0]}'")
    for role, v in values.items():
        what = _not_text(v, words and role == "text")
        if what:
            expected = "a text or a list of words" if words and role == "text" else "text"
            return Item(row, where, fields, error=f"{where}: row has {what} in '{names[role]}', expected {expected}")
    value = {role: [str(w) for w in v] if isinstance(v, list) else str(v) for role, v in values.items()}
    if "text" in value:
        value.setdefault("text_pair", None)
    return Item(row, where, fields, value)


def _not_text(value: Any, words: bool = False) -> str | None:
    """What a JSON or Parquet value is when it is no text ('an object', 'a list', ...), or
    None when it reads as one. Numbers read as text (an id-like code, a year); a structure
    or a boolean would be predicted on its Python spelling ("{'en': 'bad'}", "True")."""
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, list) and words:
        inner = next((w for w in (_not_text(v) if v is not None else "a null" for v in value) if w), None)
        return f"a list holding {inner}" if inner else None
    return value_kind(value)


def _columns(path: Path, header: list[str], wanted: dict[str, str]) -> dict[str, str]:
    """The header's column for each role; the message names the predict option that
    chooses it (--text-column, ...) rather than the training config's data.<role>_column."""
    return _match_columns(path, header, wanted, _OPTIONS)


# The predict flag that chooses each role's column, as column errors name it.
_OPTIONS = {"text": "--text-column", "text_pair": "--text-pair-column", "question": "--question-column",
            "context": "--context-column", "source": "--text-column", "prompt": "--text-column"}


def _jsonl(path: Path, handle: Any, wanted: dict[str, str], progress: Progress | None = None,
           words: bool = False) -> Iterator[Item]:
    row = 0
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        row += 1
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Item(row, where, error=f"{where}: invalid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield Item(row, where, error=f"{where}: expected a JSON object")
            continue
        mapping = _lenient_mapping(list(record), wanted)
        item = _item(row, where, {role: record.get(key) if key else None for role, key in mapping.items()},
                     {role: wanted[role] for role in mapping}, words)
        ident = _id_column(list(record), mapping)
        if progress is not None and progress.has_id is None:
            progress.has_id = ident is not None
        yield _with_id(item, record, ident)


def _lenient_mapping(available: list[str], wanted: dict[str, str]) -> dict[str, str | None]:
    """Per-record column matching (exact, then ignoring case and spaces); None when absent."""
    normalised = {str(a).strip().lower(): a for a in available}
    return {role: name if name in available else normalised.get(name.strip().lower()) for role, name in wanted.items()}


def _lines(path: Path, handle: Any, role: str = "text") -> Iterator[Item]:
    row = 0
    for number, line in enumerate(handle, 1):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        row += 1
        value = {"text": text, "text_pair": None} if role == "text" else {role: text}
        yield Item(row, f"{path}:{number}", {role: text}, value)


def _parquet(path: Path, wanted: dict[str, str], words: bool = False) -> tuple[Iterator[Item], Progress]:
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet ({' '.join(str(exc).split())[:200]})") from None
    mapping = _columns(path, source.schema_arrow.names, wanted)
    ident = _id_column(source.schema_arrow.names, mapping)

    def items() -> Iterator[Item]:
        row = 0
        for batch in source.iter_batches(batch_size=1024,
                                         columns=list(mapping.values()) + ([ident] if ident else [])):
            for record in batch.to_pylist():
                row += 1
                item = _item(row, f"{path}:row {row}", {role: record.get(key) for role, key in mapping.items()},
                             mapping, words)
                yield _with_id(item, record, ident)

    return items(), Progress(None, has_id=ident is not None)


def _guard(path: Path, items: Iterator[Item], raw: Any) -> Iterator[Item]:
    """Turn a decoding failure mid-file into one clear error, and close the file at the end."""
    try:
        yield from items
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed table ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    finally:
        raw.close()


def single_text(text: str, pair: str | None) -> tuple[Iterator[Item], Progress]:
    fields = {"text": text, **({"text_pair": pair} if pair is not None else {})}
    return iter([Item(1, "--text", fields, {"text": text, "text_pair": pair})]), Progress(None)


def image_items(root: Path) -> tuple[Iterator[Item], Progress]:
    """Every image file under root (recursively, sorted), or the one file root names."""
    if not root.exists():
        raise DataError(f"{root}: not found")
    if root.is_file():
        files = [root]
    else:
        files = image_files(root)
        if not files:
            raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    done = {"n": 0}

    def items() -> Iterator[Item]:
        for row, path in enumerate(files, 1):
            done["n"] = row
            yield Item(row, str(path), {"image": str(path)}, path)

    return items(), Progress(len(files), lambda: done["n"], "images")

