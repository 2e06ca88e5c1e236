"""Generated, learnable data for the downstream tasks, written as users' files are:
CoNLL and JSONL tagged sentences, CSV with numeric or multi-valued labels, SQuAD JSON,
and parallel text in a word-substitution language."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

# Tiny shapes for the task tests. One thread: on a shared 2-core machine two threads per
# process spin against other processes and run a tiny model several times slower.
TINY = ["backbone.hidden_size=64", "backbone.num_layers=2", "backbone.num_heads=2", "backbone.vocab_size=600",
        "backbone.dropout=0", "trainer.progress=off", "trainer.precision=fp32", "trainer.num_threads=1"]

FILLER = ["the", "a", "met", "with", "in", "on", "visited", "said", "that", "and", "today", "near", "from", "to",
          "report", "after", "before", "team", "office", "was", "seen", "—", ",", "."]
PEOPLE = ["alice", "bob", "carla", "dmitri", "emeka", "fatima", "goran", "hiro"]
PLACES = [["paris"], ["lima"], ["oslo"], ["new", "york"], ["san", "josé"], ["cape", "town"], ["kyoto"]]
ORGS = [["acme"], ["globex"], ["initech", "corp"], ["umbrella"], ["red", "cross"]]


def tagged_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """Entity tags follow from word identity (IOB2): people, places, organisations."""
    words: list[str] = []
    tags: list[str] = []
    for _ in range(rng.randint(4, 10)):
        kind = rng.random()
        if kind < 0.08:  # the same word, a person or a place depending on the word before it
            person = rng.random() < 0.5
            words += ["mr" if person else "visit", "jordan"]
            tags += ["O", "B-PER" if person else "B-LOC"]
        elif kind < 0.15:
            words.append(rng.choice(PEOPLE)), tags.append("B-PER")
        elif kind < 0.27:
            entity = rng.choice(PLACES)
            words += entity
            tags += ["B-LOC"] + ["I-LOC"] * (len(entity) - 1)
        elif kind < 0.37:
            entity = rng.choice(ORGS)
            words += entity
            tags += ["B-ORG"] + ["I-ORG"] * (len(entity) - 1)
        else:
            words.append(rng.choice(FILLER)), tags.append("O")
    return words, tags


def write_conll(path: Path, n: int, seed: int) -> Path:
    """CoNLL-2003 style: word, a POS-like column, the tag; -DOCSTART- and blank lines."""
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- O", ""]
    for _ in range(n):
        words, tags = tagged_sentence(rng)
        lines += [f"{w} {'NNP' if t != 'O' else 'XX'} {t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_tagged_jsonl(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(n):
            words, tags = tagged_sentence(rng)
            handle.write(json.dumps({"tokens": words, "tags": tags}, ensure_ascii=False) + "\n")
    return path


GOOD = ["great", "excellent", "loved", "superb", "reliable", "perfect"]
BAD = ["terrible", "awful", "broken", "useless", "faulty", "worst"]
NEUTRAL = ["the", "box", "arrived", "on", "tuesday", "it", "was", "and", "price", "screen", "battery", "colour"]


def write_scores_csv(path: Path, n: int, seed: int) -> Path:
    """A score that is the count of good words minus the count of bad ones (-3..3)."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "score"])
        for _ in range(n):
            good, bad = rng.randint(0, 3), rng.randint(0, 3)
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
            for word in [rng.choice(GOOD) for _ in range(good)] + [rng.choice(BAD) for _ in range(bad)]:
                words.insert(rng.randrange(len(words) + 1), word)
            writer.writerow([" ".join(words), good - bad])
    return path


TOPIC_WORDS = {
    "sports": ["goal", "striker", "league", "match"],
    "tech": ["chip", "software", "server", "laptop"],
    "food": ["recipe", "oven", "garlic", "soup"],
    "money": ["bank", "shares", "budget", "loan"],
}


def write_multilabel_csv(path: Path, n: int, seed: int, labels=tuple(TOPIC_WORDS)) -> Path:
    """Each text mentions words of 0-3 topics; its labels are exactly those topics."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "topics"])
        for _ in range(n):
            chosen = sorted(rng.sample(list(TOPIC_WORDS), rng.randint(0, 3)))
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
            for topic in chosen:
                words.insert(rng.randrange(len(words) + 1), rng.choice(TOPIC_WORDS[topic]))
            writer.writerow([" ".join(words), "|".join(t for t in chosen if t in labels)])
    return path


QA_FILLER = ["river", "stone", "cloud", "apple", "table", "window", "green", "quiet", "paper", "music", "garden",
             "lamp", "yellow", "bridge", "candle", "forest", "mirror", "silver", "ocean", "pencil"]
QA_ANSWERS = ["zorb", "quill", "mango", "vex", "tundra", "orbit", "pixel", "nectar", "fjord", "lumen"]


def qa_context(rng: random.Random, answer: str | None, length: int) -> tuple[str, int | None]:
    """Filler words with, when answer is given, 'code <answer>' somewhere in them."""
    words = [rng.choice(QA_FILLER) for _ in range(length)]
    start = None
    if answer is not None:
        at = rng.randrange(len(words) + 1)
        words[at:at] = ["code", answer]
        start = len(" ".join(words[:at + 1])) + 1
    return " ".join(words), start


def write_squad(path: Path, n: int, seed: int, v2: bool = False, long_every: int = 4,
                misplaced: int = 0) -> Path:
    """SQuAD JSON where the answer is the word after the marker 'code'. Every
    `long_every`-th context is long enough to need several windows. With v2, a third of
    the questions have no marker and are impossible. `misplaced` answers get a wrong
    answer_start (a reader must skip them)."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        impossible = v2 and rng.random() < 0.33
        answer = None if impossible else rng.choice(QA_ANSWERS)
        length = rng.randint(60, 90) if long_every and i % long_every == 0 else rng.randint(6, 20)
        context, start = qa_context(rng, answer, length)
        qa = {"id": f"q{i}", "question": rng.choice(["what is the code ?", "which code is it ?", "the code ?"]),
              "answers": [] if impossible else [{"text": answer, "answer_start": start + (1 if i < misplaced else 0)}]}
        if v2:
            qa["is_impossible"] = impossible
        paragraphs.append({"context": context, "qas": [qa]})
    document = {"version": "v2.0" if v2 else "1.1", "data": [{"title": "generated", "paragraphs": paragraphs}]}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


SOURCE_WORDS = [f"w{c}{v}" for c in "bdfgklmnprst" for v in "aeiou"][:16]
TARGET_WORDS = [f"z{v}{c}" for c in "bdfgklmnprst" for v in "aeiou"][:16]


def substitution_map(seed: int = 5) -> dict[str, str]:
    targets = TARGET_WORDS[:]
    random.Random(seed).shuffle(targets)
    return dict(zip(SOURCE_WORDS, targets))


def write_parallel_tsv(path: Path, n: int, seed: int, header: bool = True, min_words: int = 2,
                       max_words: int = 6) -> Path:
    """A deterministic word-substitution language: each source word has one target word
    and the order is kept."""
    mapping = substitution_map()
    rng = random.Random(seed)
    lines = ["source\ttarget"] if header else []
    for _ in range(n):
        words = [rng.choice(SOURCE_WORDS) for _ in range(rng.randint(min_words, max_words))]
        lines.append(f"{' '.join(words)}\t{' '.join(mapping[w] for w in words)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
