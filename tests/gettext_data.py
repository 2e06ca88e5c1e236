"""Real text for tests: the compiled gettext catalogs of the machine's programs
(/usr/share/locale/<lang>/LC_MESSAGES/<domain>.mo), read with Python's `gettext`.

Each catalog maps an English message (msgid) to its translation (msgstr), written by
people: English-German pairs for translation, and the same messages in many languages
for a classifier with many classes (which language is this?). Only short, plain
messages are kept (no format directives, markup, tabs or line breaks), in a fixed order,
so the files a test writes are the same on every run of the same machine.
"""
from __future__ import annotations

import csv
import gettext
import random
import re
from pathlib import Path

import pytest

LOCALE = Path("/usr/share/locale")
# Interface strings: short phrases in ordinary words (menu items, settings, file types).
DOMAINS = ("gtk20", "gtk20-properties", "gsettings-desktop-schemas", "shared-mime-info", "xkeyboard-config",
           "appstream", "glib20", "gstreamer-1.0", "at-spi2-core", "PackageKit")
_PLAIN = re.compile(r"^[^%<>{}\\\t\n_&$@|=]+$")


def messages(lang: str, domains: tuple[str, ...] = DOMAINS, max_words: int = 6) -> list[tuple[str, str]]:
    """(English, translation) pairs of `lang`, sorted and without duplicates; the test
    is skipped when the machine has no such catalogs."""
    pairs: dict[str, str] = {}
    for domain in domains:
        path = LOCALE / lang / "LC_MESSAGES" / f"{domain}.mo"
        if not path.is_file():
            continue
        try:
            with open(path, "rb") as handle:
                catalog = gettext.GNUTranslations(handle)._catalog
        except (OSError, ValueError, IndexError):  # an unreadable or oddly encoded catalog
            continue
        for source, target in catalog.items():
            if not isinstance(source, str) or not isinstance(target, str) or "\x04" in source:
                continue  # plural forms are keyed by (msgid, n); "context\x04msgid" is a msgctxt
            source, target = " ".join(source.split()), " ".join(target.split())
            if source and target and source != target and _PLAIN.match(source) and _PLAIN.match(target) \
                    and 1 <= len(source.split()) <= max_words and len(target.split()) <= max_words + 2:
                pairs.setdefault(source, target)
    if len(pairs) < 100:
        pytest.skip(f"too few gettext messages for '{lang}' under {LOCALE} ({len(pairs)})")
    return sorted(pairs.items())


def all_domains(lang: str = "de") -> tuple[str, ...]:
    """Every catalog the machine has for `lang` (about 86 for German on these machines:
    desktop programs, system tools and libraries besides the interface strings of DOMAINS)."""
    folder = LOCALE / lang / "LC_MESSAGES"
    return tuple(sorted(p.stem for p in folder.glob("*.mo"))) if folder.is_dir() else ()


def monolingual(lang: str, domains: tuple[str, ...], exclude: set[str] = frozenset(), max_words: int = 40) -> list[str]:
    """Every plain translated message of `lang` (its msgstr side only, up to `max_words`
    words), sorted and without duplicates, minus `exclude` (held-out targets must not leak
    into pretraining): monolingual target-language text for pretraining a decoder."""
    texts = {target for _, target in messages(lang, domains, max_words)}
    return sorted(texts - set(exclude))


def write_translation_tsv(folder: Path, lang: str = "de", train: int = 1200, validation: int = 80,
                          seed: int = 0, domains: tuple[str, ...] = DOMAINS) -> dict[str, Path]:
    """English -> `lang` train/validation TSV files (source, target) from the catalogs."""
    pairs = messages(lang, domains)
    random.Random(seed).shuffle(pairs)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in (("train", pairs[:train]), ("validation", pairs[train:train + validation])):
        files[split] = folder / f"{split}.tsv"
        with open(files[split], "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(["source", "target"])
            writer.writerows(rows)
    return files


def write_language_csv(folder: Path, languages: int = 32, per_language: int = 60, validation: int = 500,
                       seed: int = 0) -> dict[str, Path]:
    """Which language is this message in? `languages` classes (the catalogs with the most
    short messages), `per_language` training rows each and `validation` rows in all,
    the same English messages spread over the languages."""
    available = sorted(p.name for p in LOCALE.iterdir() if (p / "LC_MESSAGES" / "gtk20.mo").is_file()) \
        if LOCALE.is_dir() else []
    counted = []
    for lang in available:
        if lang.startswith("en") or "@" in lang:
            continue
        try:
            counted.append((len(messages(lang)), lang))
        except pytest.skip.Exception:
            continue
    if len(counted) < languages:
        pytest.skip(f"only {len(counted)} languages with gettext catalogs under {LOCALE}")
    chosen = sorted(lang for _, lang in sorted(counted, reverse=True)[:languages])
    rng = random.Random(seed)
    rows = {"train": [], "validation": []}
    per_validation = -(-validation // languages)
    for lang in chosen:
        texts = [target for _, target in messages(lang)]
        rng.shuffle(texts)
        rows["train"] += [(t, lang) for t in texts[:per_language]]
        rows["validation"] += [(t, lang) for t in texts[per_language:per_language + per_validation]]
    rng.shuffle(rows["validation"])
    rows["validation"] = rows["validation"][:validation]
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, split_rows in rows.items():
        files[split] = folder / f"{split}.csv"
        with open(files[split], "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(split_rows)
    return files
