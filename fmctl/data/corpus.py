"""Stream raw documents from files, folders and globs, one at a time, so a corpus larger
than memory passes through preparation with bounded memory."""
from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

from fmctl.data.readers import detect_format, read_rows
from fmctl.errors import DataError

CORPUS_SUFFIXES = (".txt", ".text", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named by paths, folders (searched recursively) and globs, sorted and unique."""
    if not patterns:
        raise DataError("input: no input given; pass input=PATH, input=DIR or input='corpus/*.txt'")
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if any(ch in pattern for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True)) if Path(m).is_file()]
            if not matches:
                raise DataError(f"input: '{pattern}' matches no files")
            found += matches
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _corpus_file(p))
            if not matches:
                raise DataError(f"input: folder '{path}' holds no {', '.join(CORPUS_SUFFIXES)} files (optionally .gz)")
            found += matches
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"input: '{pattern}' does not exist")
    return list(dict.fromkeys(p.resolve() for p in found))


def _corpus_file(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(CORPUS_SUFFIXES)


def iter_documents(path: Path, text_column: str, txt_mode: str) -> Iterator[str]:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".txt", ".text")):
        yield from _iter_txt(path, txt_mode)
        return
    if name.endswith((".jsonl", ".ndjson", ".json")):
        yield from _iter_jsonl(path, text_column)
        return
    fmt = detect_format(path)
    for row in read_rows(path, {"text": text_column}, fmt):
        if row["text"] is not None:
            yield str(row["text"])


def _open(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline=None)


def _iter_txt(path: Path, mode: str) -> Iterator[str]:
    """'line': every line is a document. 'paragraph': blank lines separate documents.
    'auto': paragraph mode when the file's first 64 KB contain a blank line."""
    try:
        with _open(path) as handle:
            if mode == "auto":
                head = handle.read(65536)
                mode = "paragraph" if "\n\n" in head.replace("\r", "") or head.count("\n\n") else "line"
                handle.seek(0)
            if mode == "line":
                for line in handle:
                    if line.strip():
                        yield line.rstrip("\n")
                return
            block: list[str] = []
            for line in handle:
                if line.strip():
                    block.append(line.rstrip("\n"))
                elif block:
                    yield "\n".join(block)
                    block = []
            if block:
                yield "\n".join(block)
    except UnicodeDecodeError:
        from fmctl.data.readers import _first_bad_line

        raise DataError(f"{path}:{_first_bad_line(path)}: not UTF-8 text; re-save the file as UTF-8") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def _iter_jsonl(path: Path, column: str) -> Iterator[str]:
    try:
        with _open(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict) or column not in record:
                    raise DataError(f"{path}:{number}: expected a JSON object with a '{column}' field "
                                    f"(set text_column=...)")
                if record[column] is not None:
                    yield str(record[column])
    except UnicodeDecodeError:
        from fmctl.data.readers import _first_bad_line

        raise DataError(f"{path}:{_first_bad_line(path)}: not UTF-8 text; re-save the file as UTF-8") from None
