"""Test helpers: generated data that looks like users' files, and a way to run
the shipped recipes shrunk to a few seconds, in-process or through the real CLI."""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Tiny shapes that still learn: every training test shrinks the recipes with these.
TINY_TEXT = ["backbone.hidden_size=64", "backbone.num_layers=2", "backbone.num_heads=2", "backbone.vocab_size=600",
             "data.max_length=48", "trainer.progress=off", "trainer.precision=fp32", "trainer.num_threads=1"]
TINY_VIT = ["backbone.hidden_size=48", "backbone.num_layers=2", "backbone.num_heads=2", "backbone.image_size=16",
            "backbone.patch_size=4", "trainer.progress=off", "trainer.precision=fp32", "trainer.num_threads=1"]


POSITIVE = ["great", "excellent", "loved", "wonderful", "superb", "reliable", "delightful", "fantastic", "perfect",
            "comfortable", "recommend", "happy"]
NEGATIVE = ["terrible", "awful", "broken", "refund", "disappointing", "useless", "poor", "worst", "cheap",
            "faulty", "annoying", "returned"]
NEUTRAL = ["the", "delivery", "box", "arrived", "on", "tuesday", "it", "was", "and", "my", "sister", "used", "for",
           "a", "week", "colour", "size", "price", "battery", "screen", "café", "naïve", "résumé", "😀", "—"]


def review(rng: random.Random, label: str) -> str:
    """A product review whose label follows from its sentiment words, with filler,
    punctuation, accents and the odd emoji, as scraped reviews have."""
    bank = POSITIVE if label == "positive" else NEGATIVE
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(4, 14))]
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(bank))
    text = " ".join(words)
    if rng.random() < 0.3:
        text = f'"{text}", she said,\nthen added more'  # quoted comma and an embedded newline
    return text[0].upper() + text[1:] + rng.choice([".", "!", "...", ""])


def write_reviews_csv(path: Path, n: int, seed: int, *, header=("Review Text ", "Sentiment"),
                      labels=("positive", "negative"), bom: bool = True, delimiter: str = ",") -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow([*header, "stars"])
        for _ in range(n):
            label = rng.choice(labels)
            writer.writerow([review(rng, label), label, rng.randint(1, 5)])
    return path


def write_pairs_jsonl(path: Path, n: int, seed: int) -> Path:
    """Sentence pairs: 'same' when both halves share a sentiment, else 'different'."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(n):
            a, b = rng.choice(["positive", "negative"]), rng.choice(["positive", "negative"])
            handle.write(json.dumps({"premise": review(rng, a), "hypothesis": review(rng, b),
                                     "label": "same" if a == b else "different"}) + "\n")
    return path


def write_shapes_folder(root: Path, per_class: int, seed: int, size: int = 16) -> Path:
    """An ImageFolder of real PNG/JPEG files: bright horizontal vs vertical bars on noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    for label in ("horizontal", "vertical"):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.randint(0, 90, size=(size, size, 3)).astype("uint8")
            start = rng.randint(0, size - 4)
            if label == "horizontal":
                pixels[start:start + 3, :, :] = 230
            else:
                pixels[:, start:start + 3, :] = 230
            image = Image.fromarray(pixels)
            if i % 3 == 0:
                image.save(folder / f"img_{i:03d}.jpg", quality=95)
            else:
                image.save(folder / f"img_{i:03d}.png")
    return root


def compose(recipe: str, overrides: list[str], run_dir: Path | None = None):
    """(raw DictConfig, RunConfig) exactly as `fmctl finetune recipe=... overrides` builds them."""
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.validate import validate

    extra = [f"run_dir={run_dir}"] if run_dir is not None else []
    checked = preflight(parse_invocation([f"recipe={recipe}", *overrides, *extra]))
    return checked.config, validate(checked.config)


def finetune(recipe: str, overrides: list[str], run_dir: Path):
    from rich.console import Console

    from fmctl import pipeline

    raw, run = compose(recipe, overrides, run_dir)
    return pipeline.finetune(run, raw, console=Console(file=open(os.devnull, "w")))


def customize(base: Path, overrides: list[str], run_dir: Path):
    """`fmctl customize base=... overrides` in-process, as the CLI composes it."""
    from rich.console import Console

    from fmctl import pipeline
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.saved_runs import customize_invocation
    from fmctl.config.validate import validate

    args = customize_invocation([f"base={base}", *overrides, f"run_dir={run_dir}"])
    checked = preflight(parse_invocation(args, "customize_bert_lora"))
    return pipeline.customize(validate(checked.config), checked.config, console=Console(file=open(os.devnull, "w")))


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "fmctl", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
