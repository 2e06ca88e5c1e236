"""`fmctl data icons`: image-caption pairs made from an installed freedesktop icon theme
(Adwaita, Debian package adwaita-icon-theme), for trying contrastive training on real
images with no download.

Every icon file is named by what it shows and sits in a context folder; the caption says
both: `status/audio-volume-high-symbolic.symbolic.png` -> "a status icon: audio volume
high"; full-colour icons (no -symbolic) say so: "a colour status icon: audio volume
high". Right-to-left variants are mirror images with the same caption (repeated captions,
as real data has). Colour icons in the theme's legacy/ folder take the context of the
same name's symbolic icon where there is one. Nothing is drawn or made up: each row is a
file of the theme (copied, at the size asked for) and words from its name and folder.

The split is by concept (the name without -symbolic/-rtl): all variants of a concept fall
in one split, so no test caption was seen in training. The test images are also laid out
as class folders for zero-shot classification by what they show: the class is the first
word of the icon's name, the family the freedesktop Icon Naming Specification groups names
by (battery-level-50 -> battery, mail-send -> mail, media-eject -> media), for families
with at least `zero_shot_min_images` test images (zero_shot/<family>/). A test icon's own
name is unseen, but other members of its family were trained on, as "a photo of a dog"
is unseen for a dog photo. (The context folders make a poor zero-shot task here: icons of
one context share a batch's captions' context word, so a contrastive model learns to
tell icons apart by their names and barely by their context; measured below chance.)
"""
from __future__ import annotations

import csv
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from fmctl.config.schema import bounded
from fmctl.errors import ConfigError, DataError

# Context folder -> the word a caption uses (and the zero-shot class folder's name).
CONTEXTS = {"actions": "action", "apps": "application", "categories": "category", "devices": "device",
            "emblems": "emblem", "emotes": "emote", "mimetypes": "file_type", "places": "place", "status": "status",
            "ui": "interface"}
LEGACY = "legacy"
_DROPPED = {"symbolic", "rtl", "ltr"}


@dataclass
class IconsConfig:
    out: str = "data/icons"                         # folder for images/, the tables and zero_shot/
    theme: str = "/usr/share/icons/Adwaita"         # an installed icon theme with <size>/<context>/ folders
    size: int = bounded(32, ge=8)                   # pixel size to copy (the nearest size a file has)
    validation_fraction: float = bounded(0.1, gt=0.0, lt=1.0)   # of concepts
    test_fraction: float = bounded(0.25, gt=0.0, lt=1.0)        # of concepts
    # Training pairs also at every other size the theme has the icon in (each size is drawn for
    # itself, so these are more real views of the same icon); validation and test keep one.
    train_all_sizes: bool = True
    # Zero-shot class folders: name families with at least this many test images.
    zero_shot_min_images: int = bounded(3, ge=1)
    seed: int = 0
    overwrite: bool = False


@dataclass
class Icon:
    file: Path          # the chosen file in the theme
    context: str        # its folder (status, legacy, ...)
    concept: str        # name without -symbolic / -rtl: audio-volume-high
    symbolic: bool
    others: tuple[Path, ...] = ()   # the same icon at the theme's other sizes


def concept_of(file_name: str) -> tuple[str, bool]:
    """('audio-volume-high', True) for 'audio-volume-high-rtl-symbolic.symbolic.png'."""
    stem = file_name[:-len(".png")] if file_name.endswith(".png") else file_name
    symbolic = stem.endswith(".symbolic") or "-symbolic" in stem
    stem = stem.replace(".symbolic", "")
    return "-".join(p for p in stem.split("-") if p not in _DROPPED), symbolic


def caption(icon: Icon, context_word: str | None) -> str:
    words = icon.concept.split("-")
    if len(words) > 1 and words[0] == "x":   # x-office-document: the mime 'x-' prefix says nothing
        words = words[1:]
    kind = " ".join(w for w in ("colour" if not icon.symbolic else "", (context_word or "").replace("_", " ")) if w)
    article = "an" if (kind or "icon")[0] in "aeiou" else "a"
    return f"{article} {kind + ' ' if kind else ''}icon: {' '.join(words)}"


def scan(theme: Path, size: int) -> list[Icon]:
    """One icon per (context, file name): its file at `size`, else at the nearest size (a
    smaller one on a tie), and its files at the other sizes up to 4 x `size` (a 512-px
    file costs more to decode each step than a small model's step and adds no detail)."""
    if not (theme / "index.theme").is_file():
        raise DataError(f"theme: '{theme}' is not an installed icon theme (no index.theme); install "
                        f"adwaita-icon-theme or point theme= at one")
    found: dict[tuple[str, str], list[tuple[tuple[int, bool], Path]]] = {}
    for folder in theme.iterdir():
        width = folder.name.split("x")[0]
        if not folder.is_dir() or not width.isdigit() or folder.name != f"{width}x{width}":
            continue
        for context_dir in folder.iterdir():
            if context_dir.name not in CONTEXTS and context_dir.name != LEGACY:
                continue
            for file in context_dir.glob("*.png"):
                distance = (abs(int(width) - size), int(width) > size)
                found.setdefault((context_dir.name, file.name), []).append((distance, file))
    if not found:
        raise DataError(f"theme: '{theme}' has no <size>x<size>/<context>/*.png icons")
    icons = []
    for (context, name), files in sorted(found.items()):
        ordered = [file for _, file in sorted(files)]
        others = tuple(f for f in ordered[1:] if int(f.parent.parent.name.split("x")[0]) <= 4 * size)
        icons.append(Icon(ordered[0], context, *concept_of(name), others=others))
    return icons


def context_words(icons: list[Icon]) -> dict[str, str | None]:
    """concept -> the one context word its icons outside legacy/ have (None when none or
    several): what a legacy colour icon's caption says (word_for)."""
    found: dict[str, set[str]] = {}
    for icon in icons:
        if icon.context != LEGACY:
            found.setdefault(icon.concept, set()).add(CONTEXTS[icon.context])
    return {icon.concept: next(iter(found[icon.concept])) if len(found.get(icon.concept, ())) == 1 else None
            for icon in icons}


def word_for(icon: Icon, legacy_words: dict[str, str | None]) -> str | None:
    return CONTEXTS[icon.context] if icon.context != LEGACY else legacy_words.get(icon.concept)


def split_concepts(concepts: list[str], validation: float, test: float, seed: int) -> dict[str, str]:
    """concept -> train / validation / test, a seeded shuffle of the sorted concepts."""
    order = sorted(concepts)
    random.Random(seed).shuffle(order)
    n_test, n_val = max(1, round(len(order) * test)), max(1, round(len(order) * validation))
    return {c: "test" if i < n_test else "validation" if i < n_test + n_val else "train" for i, c in enumerate(order)}


def make_icons(cfg: IconsConfig) -> dict[str, object]:
    """Write OUT/{train,validation,test}.csv (image, caption, concept, context, style),
    OUT/images/ and OUT/zero_shot/<family>/; returns the counts (also OUT/report.json).
    Built in a temporary folder and renamed into place, so OUT is whole or absent."""
    out = Path(cfg.out).expanduser()
    if cfg.validation_fraction + cfg.test_fraction >= 1.0:
        raise ConfigError(f"test_fraction: {cfg.test_fraction} + validation_fraction {cfg.validation_fraction} leaves "
                          f"no concepts to train on; keep their sum below 1")
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise DataError(f"out: '{out}' is not empty; choose another folder or set overwrite=true")
    icons = scan(Path(cfg.theme).expanduser(), cfg.size)
    legacy_words = context_words(icons)
    splits = split_concepts([i.concept for i in icons], cfg.validation_fraction, cfg.test_fraction, cfg.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}-partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = _write(tmp, icons, legacy_words, splits, cfg.train_all_sizes)
        counts["zero_shot_classes"] = _zero_shot_folders(tmp, [i for i in icons if splits[i.concept] == "test"],
                                                         cfg.zero_shot_min_images)
        report = {"theme": str(Path(cfg.theme).resolve()), "size": cfg.size, "seed": cfg.seed, **counts}
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _write(folder: Path, icons: list[Icon], legacy_words: dict[str, str | None],
           splits: dict[str, str], all_sizes: bool) -> dict[str, object]:
    rows: dict[str, list[list[str]]] = {"train": [], "validation": [], "test": []}
    for icon in icons:
        word = word_for(icon, legacy_words)
        split = splits[icon.concept]
        files = [icon.file, *(icon.others if all_sizes and split == "train" else ())]
        for file in files:
            relative = Path("images") / file.parent.parent.name / icon.context / file.name
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, folder / relative)
            rows[split].append([relative.as_posix(), caption(icon, word), icon.concept, word or "",
                                "symbolic" if icon.symbolic else "colour"])
    for split, table in rows.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "caption", "concept", "context", "style"])
            writer.writerows(table)
    return {"pairs": {s: len(t) for s, t in rows.items()},
            "concepts": {s: len({r[2] for r in t}) for s, t in rows.items()},
            "captions": {s: len({r[1] for r in t}) for s, t in rows.items()}}


def name_family(concept: str) -> str:
    """The first word of an icon name (after the mime 'x-' prefix): its naming family."""
    words = concept.split("-")
    return words[1] if len(words) > 1 and words[0] == "x" else words[0]


def _zero_shot_folders(folder: Path, test_icons: list[Icon], min_images: int) -> dict[str, int]:
    """zero_shot/<family>/<context>-<file> for the families with at least `min_images` test
    icons; returns the images per class."""
    families: dict[str, list[Icon]] = {}
    for icon in test_icons:
        families.setdefault(name_family(icon.concept), []).append(icon)
    classes = {family: members for family, members in families.items() if len(members) >= min_images}
    for family, members in classes.items():
        for icon in members:
            target = folder / "zero_shot" / family / f"{icon.context}-{icon.file.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(icon.file, target)
    return {family: len(members) for family, members in sorted(classes.items())}
