"""Stream raw documents from files, folders and globs, one at a time, so a corpus larger
than memory passes through preparation with bounded memory."""
from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
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


TXT_SAMPLE_CHARS = 65536
# auto: blank lines must recur, at least this many between text and on average one per
# PARAGRAPH_MAX_LINES text lines or more often, before they are taken as document breaks.
PARAGRAPH_MIN_BREAKS = 2
PARAGRAPH_MAX_LINES = 50


def is_txt(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith((".txt", ".text"))


def iter_documents(path: Path, text_column: str, txt_mode: str) -> Iterator[str]:
    """Documents of one file; `txt_mode` must be resolved ('line' or 'paragraph', see
    txt_documents_mode) for .txt files."""
    name = path.name.lower().removesuffix(".gz")
    if is_txt(path):
        yield from _iter_txt(path, txt_mode)
        return
    if name.endswith((".jsonl", ".ndjson", ".json")):
        yield from _iter_jsonl(path, text_column)
        return
    fmt = detect_format(path)
    for row in read_rows(path, {"text": text_column}, fmt, keys={"text": "text_column"}):  # prepare's own key
        if row["text"] is not None:
            yield str(row["text"])


def _open(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline=None)


def txt_documents_mode(path: Path, txt_mode: str) -> str:
    """'line' or 'paragraph' for a .txt file: txt_mode itself unless it is 'auto'.

    auto reads the first 64 KB. A file of one document per line often has a stray blank
    line (or a few at the end), and paragraph mode would then glue hundreds of documents
    into one; so blank lines count as document breaks only when they recur between text:
    at least PARAGRAPH_MIN_BREAKS breaks, and on average one per PARAGRAPH_MAX_LINES
    lines or more often. Leading and trailing blank lines never count. (Single-line
    paragraphs give the same documents in either mode, since line mode skips blank lines.)"""
    if txt_mode != "auto":
        return txt_mode
    with _txt_errors(path), _open(path) as handle:
        head = handle.read(TXT_SAMPLE_CHARS)
        if len(head) == TXT_SAMPLE_CHARS:
            head = head[: head.rfind("\n") + 1]  # the last line may be cut: drop it
    text_lines, breaks, blank_run = 0, 0, False
    for line in head.splitlines():
        if not line.strip():
            blank_run = True
            continue
        if blank_run and text_lines:
            breaks += 1  # blank lines with text before and after them
        blank_run = False
        text_lines += 1
    regular = breaks >= PARAGRAPH_MIN_BREAKS and text_lines <= PARAGRAPH_MAX_LINES * breaks
    return "paragraph" if regular else "line"


def _iter_txt(path: Path, mode: str) -> Iterator[str]:
    """'line': every non-blank line is a document. 'paragraph': blank lines separate
    documents (a document's lines are joined with newlines)."""
    if mode not in ("line", "paragraph"):
        raise ValueError(f"txt mode {mode!r}: resolve 'auto' with txt_documents_mode first")
    with _txt_errors(path), _open(path) as handle:
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


@contextmanager
def _txt_errors(path: Path) -> Iterator[None]:
    """Undecodable or unreadable text as one line naming the file (and the bad line)."""
    try:
        yield
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
