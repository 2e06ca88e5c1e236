"""Built-in datasets, so that the demo and the tests need no download.

`topics`: short news-like sentences about five subjects, generated from word lists and
sentence templates, with words shared between subjects and off-topic distractors, so a
model has to weigh several words rather than spot one. `digits`: scikit-learn's bundled
8x8 handwritten digits (1,797 real scans), upscaled and written as an ImageFolder.

Both are written once into the fmctl cache (FMCTL_CACHE, default ~/.cache/fmctl) as the
same files a user would bring (CSV files, class folders of PNGs) and then read by the
normal readers; the content depends only on the version tag below.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

from fmctl import paths

TOPICS_VERSION = "topics-v1"
DIGITS_VERSION = "digits-v1"

_SUBJECTS = {
    "sports": {
        "nouns": ["striker", "goalkeeper", "referee", "stadium", "league", "coach", "match", "season",
                  "tournament", "midfielder", "penalty", "championship", "fans", "team", "race", "sprinter",
                  "marathon", "medal", "record", "final", "playoffs", "derby", "transfer", "squad"],
        "verbs": ["scored", "defended", "won", "lost", "trained for", "qualified for", "celebrated",
                  "was sent off in", "equalised in", "broke"],
        "adjectives": ["injured", "unbeaten", "relegated", "veteran", "home", "away", "decisive"],
    },
    "technology": {
        "nouns": ["processor", "smartphone", "software", "startup", "algorithm", "server", "chip", "browser",
                  "update", "network", "battery", "developer", "laptop", "cloud", "database", "robot",
                  "sensor", "app", "security flaw", "operating system", "data centre", "model", "platform"],
        "verbs": ["launched", "patched", "released", "upgraded", "crashed", "open-sourced", "benchmarked",
                  "shipped", "hacked", "rebooted"],
        "adjectives": ["faster", "wireless", "encrypted", "experimental", "quantum", "portable", "new"],
    },
    "cooking": {
        "nouns": ["recipe", "oven", "sauce", "chef", "dough", "soup", "garlic", "pastry", "kitchen", "salad",
                  "spices", "roast", "butter", "risotto", "dessert", "chip", "menu", "restaurant", "grill",
                  "broth", "flour", "tart", "casserole"],
        "verbs": ["baked", "simmered", "seasoned", "roasted", "whisked", "served", "tasted", "grilled",
                  "chopped", "plated"],
        "adjectives": ["crispy", "spicy", "creamy", "fresh", "homemade", "vegetarian", "slow-cooked"],
    },
    "finance": {
        "nouns": ["bank", "investor", "stock", "bond", "inflation", "interest rate", "market", "shares",
                  "budget", "dividend", "loan", "currency", "fund", "profit", "merger", "startup", "record",
                  "tax", "pension", "portfolio", "earnings", "deficit", "platform"],
        "verbs": ["raised", "cut", "invested in", "sold", "borrowed", "reported", "audited", "downgraded",
                  "bought", "hedged"],
        "adjectives": ["quarterly", "volatile", "bullish", "bearish", "annual", "fiscal", "record"],
    },
    "travel": {
        "nouns": ["flight", "hotel", "passport", "beach", "island", "tourist", "airport", "cruise", "museum",
                  "backpacker", "train", "resort", "visa", "luggage", "guidebook", "village", "coast",
                  "mountain", "ferry", "hostel", "itinerary", "final", "restaurant"],
        "verbs": ["booked", "visited", "explored", "cancelled", "delayed", "toured", "hiked to", "sailed to",
                  "checked into", "photographed"],
        "adjectives": ["remote", "crowded", "scenic", "budget", "overnight", "coastal", "historic"],
    },
}
_FILLER_SUBJECTS = ["people", "the city", "a local group", "residents", "the company", "our reporter",
                    "visitors", "the government", "a family", "students", "critics", "everyone"]
_TIMES = ["yesterday", "on Monday", "last week", "this morning", "after a long wait", "for the first time",
          "again", "late at night", "despite the rain", "earlier this year", "over the weekend"]
_TEMPLATES = [
    "The {adj} {noun} {verb} the {noun2} {time}.",
    "{filler} said the {noun} {verb} a {adj} {noun2}.",
    "{time_cap}, the {noun} {verb} the {adj} {noun2} while {filler} watched.",
    "Why the {noun} {verb} the {noun2} matters for {filler}.",
    "A {adj} {noun} and a {noun2}: {filler} react.",
    "{filler} expect the {noun} to be {adj} {time}.",
    "Report: {noun} {verb} {noun2}, {filler} surprised",
    "After the {noun2}, the {noun} {verb} the {noun3} {time}.",
]


def topics_files() -> dict[str, Path]:
    """Write (once) and return train/validation/test CSVs of the topics dataset."""
    folder = paths.cache_dir() / "builtin" / TOPICS_VERSION
    files = {split: folder / f"{split}.csv" for split in ("train", "validation", "test")}
    if all(f.is_file() for f in files.values()):
        return files
    sizes = {"train": 3000, "validation": 500, "test": 500}
    with _atomic_folder(folder) as tmp:
        import csv

        for offset, (split, count) in enumerate(sizes.items()):
            rng = random.Random(1000 + offset)
            with open(tmp / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "label"])
                for _ in range(count):
                    label = rng.choice(sorted(_SUBJECTS))
                    writer.writerow([_topic_sentence(rng, label), label])
    return files


def _topic_sentence(rng: random.Random, label: str) -> str:
    words = _SUBJECTS[label]
    other = _SUBJECTS[rng.choice([s for s in sorted(_SUBJECTS) if s != label])]
    # One slot in four takes an off-topic word, so no single word decides the label.
    def pick(kind: str) -> str:
        source = other if rng.random() < 0.25 else words
        return rng.choice(source[kind])

    time = rng.choice(_TIMES)
    sentence = rng.choice(_TEMPLATES).format(
        adj=pick("adjectives"), noun=rng.choice(words["nouns"]), noun2=pick("nouns"), noun3=pick("nouns"),
        verb=pick("verbs"), filler=rng.choice(_FILLER_SUBJECTS), time=time, time_cap=time[0].upper() + time[1:],
    )
    return sentence[0].upper() + sentence[1:]


def digits_folders() -> dict[str, Path]:
    """Write (once) and return train/validation/test ImageFolders of scikit-learn's digits."""
    folder = paths.cache_dir() / "builtin" / DIGITS_VERSION
    splits = {split: folder / split for split in ("train", "validation", "test")}
    if all(p.is_dir() for p in splits.values()):
        return splits
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.target))
    bounds = {"train": order[:1300], "validation": order[1300:1550], "test": order[1550:]}
    with _atomic_folder(folder) as tmp:
        for split, indices in bounds.items():
            for index in indices:
                label = int(digits.target[index])
                pixels = (digits.images[index] * (255.0 / 16.0)).clip(0, 255).astype("uint8")
                image = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR)
                target = tmp / split / str(label)
                target.mkdir(parents=True, exist_ok=True)
                image.convert("RGB").save(target / f"{index:04d}.png")
    return splits


class _atomic_folder:
    """Build a folder under a temporary name and rename it into place, so concurrent or
    interrupted runs never see half a dataset."""

    def __init__(self, final: Path):
        self.final = final

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}-", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            os.replace(self.tmp, self.final)
        except OSError:  # another process finished first; keep its copy
            shutil.rmtree(self.tmp, ignore_errors=True)
