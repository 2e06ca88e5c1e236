"""Word-level tagged sentences (NER, POS): CoNLL files and JSONL/Parquet tables.

CoNLL: one word per line, its tag in the last whitespace-separated column (CoNLL-2003's
POS and chunk columns in between are ignored), a blank line between sentences,
`-DOCSTART-` lines skipped. Tables: a list of words and a list of tags per row
(data.tokens_column, data.tags_column). Every problem names the file and line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.config.schema import DataConfig
from fmctl.data.readers import _decode_guard, _open_text, read_rows
from fmctl.errors import DataError

_TABLE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".pq")
# Columns are separated by ASCII spaces and tabs only: str.split() would also cut at a
# no-break space inside a word ("1\u00a0000"), giving that line an extra column.
_COLUMN = re.compile(r"[^ \t\r\n\f\v]+")


@dataclass
class TokenRow:
    tokens: list[str]
    tags: list[str]
    line: int          # first line of the sentence (CoNLL) or the row's line (tables)
    source: Path
    one_per_line: bool = False   # CoNLL: word i is on line `line + i`

    def where(self, i: int) -> str:
        """'file:line' of word i, for messages."""
        return f"{self.source}:{self.line + i if self.one_per_line else self.line}"


def read_token_rows(path: Path, data: DataConfig) -> list[TokenRow]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a CoNLL or JSONL file")
    fmt = data.format
    if fmt == "auto":
        suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
        fmt = "table" if suffixes and suffixes[-1] in _TABLE_SUFFIXES else "conll"
    if fmt == "conll":
        rows = list(_decode_guard(path, lambda: _conll_sentences(path)))
    elif fmt in ("jsonl", "parquet", "table"):
        rows = _table_rows(path, data, "auto" if fmt == "table" else fmt)
    else:
        raise DataError(f"{path}: data.format={fmt} does not hold tagged words; use conll, jsonl or parquet")
    if not rows:
        raise DataError(f"{path}: no sentences (the file is empty)")
    return rows


def _conll_sentences(path: Path):
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    columns = None
    with _open_text(path) as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.rstrip("\r\n")
            fields = _COLUMN.findall(line)
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    yield TokenRow(tokens, tags, start, path, one_per_line=True)
                tokens, tags = [], []
                continue
            if len(fields) < 2:
                raise DataError(f"{path}:{number}: expected a word and its tag separated by whitespace, got "
                                f"'{line.strip()[:60]}'")
            if columns is None:
                columns = len(fields)
            elif len(fields) != columns:
                raise DataError(f"{path}:{number}: {len(fields)} columns but earlier lines have {columns}; the tag is "
                                f"read from the last column, so every line needs the same columns")
            if not tokens:
                start = number
            tokens.append(fields[0])
            tags.append(fields[-1])
    if tokens:
        yield TokenRow(tokens, tags, start, path, one_per_line=True)


def _table_rows(path: Path, data: DataConfig, fmt: str) -> list[TokenRow]:
    rows = read_rows(path, {"tokens": data.tokens_column, "tags": data.tags_column}, fmt)
    out = []
    for row in rows:
        line = row["_line"]
        tokens = _string_list(row["tokens"], path, line, data.tokens_column)
        tags = _string_list(row["tags"], path, line, data.tags_column)
        if not tokens:
            raise DataError(f"{path}:{line}: no words in column '{data.tokens_column}'")
        if len(tokens) != len(tags):
            raise DataError(f"{path}:{line}: {len(tokens)} words but {len(tags)} tags; every word needs one tag")
        out.append(TokenRow(tokens, tags, line, path))
    return out


def _string_list(value: Any, path: Path, line: int, column: str) -> list[str]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list):
        raise DataError(f"{path}:{line}: column '{column}' must hold a list, got {type(value).__name__}")
    out = []
    for item in value:
        if item is None or isinstance(item, (list, dict)) or (isinstance(item, str) and not item.strip()):
            raise DataError(f"{path}:{line}: column '{column}' holds an empty or nested item ({item!r})")
        out.append(str(item).strip())
    return out
