"""Document cleaning rules, each switchable and counted, in a fixed order."""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

from fmctl.config.prepare_schema import CleanConfig

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_NEWLINES = re.compile(r"\n{3,}")


class Cleaner:
    """clean(text) -> cleaned text, or None when a rule drops the document; `counts`
    says how many documents each rule changed or removed."""

    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg
        self.counts: Counter[str] = Counter()

    def clean(self, text: str) -> str | None:
        cfg = self.cfg
        if cfg.normalize != "none":
            normalised = unicodedata.normalize(cfg.normalize.upper(), text)
            if normalised != text:
                self.counts["changed_by_normalize"] += 1
            text = normalised
        if cfg.strip_control:
            stripped = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
            if stripped != text:
                self.counts["changed_by_strip_control"] += 1
            text = stripped
        if cfg.collapse_whitespace:
            collapsed = _NEWLINES.sub("\n\n", _SPACES.sub(" ", text))
            collapsed = "\n".join(line.strip() for line in collapsed.split("\n")).strip()
            if collapsed != text:
                self.counts["changed_by_collapse_whitespace"] += 1
            text = collapsed
        if len(text) < cfg.min_chars:
            self.counts["removed_by_min_chars"] += 1
            return None
        if cfg.max_chars is not None and len(text) > cfg.max_chars:
            self.counts["removed_by_max_chars"] += 1
            return None
        return text
