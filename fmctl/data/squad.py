"""SQuAD v1.1 and v2.0 JSON: {"version", "data": [{"title", "paragraphs": [{"context",
"qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}.

An answer whose text is not found at its `answer_start` in the context cannot be turned
into a token span; such answers are counted in one warning rather than stopping the run,
because real files have a few. They still count as gold answers when scoring: SQuAD's
official script compares texts only, so an evaluation keeps every question and every
answer text, while training (`trainable`) drops questions left without a span. A file
whose structure is wrong is an error naming the item.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmctl.data.readers import _decode_guard, _open_text
from fmctl.errors import DataError


@dataclass
class QARow:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]   # (text, character start), each checked against the context
    impossible: bool                 # SQuAD v2.0 question without an answer
    where: str                       # 'data[0].paragraphs[3].qas[1]', for messages
    source: Path
    references: list[str] = field(default_factory=list)  # every gold answer text, for scoring

    @property
    def trainable(self) -> bool:
        """Has a token span to learn (or is a v2.0 no-answer question)."""
        return self.impossible or bool(self.answers)


@dataclass
class SquadFile:
    rows: list[QARow]
    version_2: bool                  # has questions without an answer (v2.0)
    warnings: list[str] = field(default_factory=list)


def read_squad(path: Path) -> SquadFile:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a SQuAD JSON file")
    document = _load(path)
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: not SQuAD JSON; expected an object with a 'data' list of articles")
    version_2 = str(document.get("version", "")).lstrip("v").startswith("2")
    rows: list[QARow] = []
    seen: dict[str, str] = {}
    misplaced: list[str] = []
    unanswered: list[str] = []
    for a, article in enumerate(document["data"]):
        for p, paragraph in enumerate(_items(article, "paragraphs", f"data[{a}]", path)):
            where_p = f"data[{a}].paragraphs[{p}]"
            context = _text(paragraph, "context", where_p, path)
            for q, qa in enumerate(_items(paragraph, "qas", where_p, path)):
                where = f"{where_p}.qas[{q}]"
                qid = str(_field(qa, "id", where, path))
                if qid in seen:
                    raise DataError(f"{path}: {where}: question id '{qid}' already used at {seen[qid]}; ids must be "
                                    f"unique")
                seen[qid] = where
                impossible = bool(qa.get("is_impossible", False))
                version_2 = version_2 or impossible
                answers, references = [], []
                for n, answer in enumerate(qa.get("answers") or []):
                    text = _text(answer, "text", f"{where}.answers[{n}]", path, allow_empty=False)
                    references.append(text)
                    start = answer.get("answer_start")
                    if not isinstance(start, int) or context[start:start + len(text)] != text:
                        misplaced.append(f"'{qid}'")
                        continue
                    answers.append((text, start))
                if not impossible and not references:
                    unanswered.append(f"'{qid}'")
                    continue
                rows.append(QARow(qid, _text(qa, "question", where, path), context,
                                  [] if impossible else answers, impossible, where, path,
                                  [] if impossible else references))
    warnings = []
    if misplaced:
        warnings.append(f"{path}: {_count(misplaced, 'answer')} whose text does not occur at answer_start "
                        f"(questions {_first(misplaced)}): not used as training spans, still scored as gold answers")
    if unanswered:
        warnings.append(f"{path}: skipped {_count(unanswered, 'question')} without any answer and not marked "
                        f"is_impossible ({_first(unanswered)})")
    if not rows:
        raise DataError(f"{path}: no usable questions")
    return SquadFile(rows, version_2, warnings)


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _first(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")


def _load(path: Path) -> Any:
    def read():
        with _open_text(path) as handle:
            try:
                yield json.load(handle)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None

    return next(iter(_decode_guard(path, read)))


def _field(node: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(node, dict) or key not in node:
        raise DataError(f"{path}: {where}: missing '{key}'")
    return node[key]


def _items(node: Any, key: str, where: str, path: Path) -> list[Any]:
    value = _field(node, key, where, path)
    if not isinstance(value, list):
        raise DataError(f"{path}: {where}.{key}: expected a list")
    return value


def _text(node: Any, key: str, where: str, path: Path, allow_empty: bool = False) -> str:
    value = _field(node, key, where, path)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise DataError(f"{path}: {where}.{key}: expected non-empty text")
    return value
