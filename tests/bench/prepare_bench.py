"""`make bench` (pretraining part): corpus preparation throughput and memory, and
pretraining tokens/s and MFU.

1. Generates a corpus of SIZE_MB (default 300) of Zipf-distributed text with 5% exact and
   5% near duplicates, in gzip'd and plain .txt files.
2. Runs `fmctl data prepare` on it in a child process: wall time, MB/s, peak RSS.
3. Baseline in a child process: a plain `tokenizer(text)` call per document over the same
   files with the tokenizer step 2 trained (no cleaning, no dedup, no packing).
4. Pretrains bert_mlm and gpt_clm (size mini, 40 steps) on a prepared corpus and reports
   the median tokens/s and MFU of the logged steps, against the matmul peak measured in
   the same process.
Usage: python tests/bench/prepare_bench.py [SIZE_MB] [WORK_DIR]
"""
from __future__ import annotations

import gzip
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_md import write_section  # noqa: E402

FMCTL = [sys.executable, "-m", "fmctl"]


def make_corpus(folder: Path, size_mb: int, seed: int = 0) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    weights = [1 / (i + 1) for i in range(5000)]
    written, docs, part = 0, [], 0
    target = size_mb * 1_000_000
    while written < target:
        words = rng.choices(vocab, weights=weights, k=rng.randint(30, 150))
        doc = " ".join(words)
        roll = rng.random()
        if docs and roll < 0.05:
            doc = rng.choice(docs[-1000:])                    # exact duplicate
        elif docs and roll < 0.10:
            doc = rng.choice(docs[-1000:]) + " " + rng.choice(vocab)  # near duplicate
        docs.append(doc)
        written += len(doc) + 1
        if len(docs) >= 50_000:
            _flush(folder, part, docs)
            part, docs = part + 1, []
    _flush(folder, part, docs)
    return written


def _flush(folder: Path, part: int, docs: list[str]) -> None:
    text = "\n".join(docs) + "\n"
    if part % 2:
        with gzip.open(folder / f"part_{part:03d}.txt.gz", "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        (folder / f"part_{part:03d}.txt").write_text(text, encoding="utf-8")


def timed_child(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of the child and its own children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024, done.stdout


BASELINE = r'''
import gzip, resource, sys, pathlib
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
n = 0
for path in sorted(pathlib.Path(sys.argv[2]).iterdir()):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            n += len(tok(line)["input_ids"])
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
'''


def main(size_mb: int, work: Path) -> list[tuple[str, str]]:
    corpus = work / "corpus"
    if not corpus.exists():
        make_corpus(corpus, size_mb)
    input_mb = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6
    raw_mb = size_mb
    prepared = work / "prepared"
    shutil.rmtree(prepared, ignore_errors=True)  # an up-to-date folder would be reused, not timed
    wall, rss, _ = timed_child([*FMCTL, "data", "prepare", f"input={corpus}", f"out={prepared}", "overwrite=true",
                                "tokenizer.kind=wordpiece", "tokenizer.vocab_size=8000"])
    report = json.loads((prepared / "report.json").read_text())
    # RUSAGE_CHILDREN keeps the largest child so far, so the baseline reports its own peak.
    base_wall, _, out = timed_child([sys.executable, "-c", BASELINE, str(prepared / "tokenizer"), str(corpus)])
    base_rss = float(out.split()[-1])
    rows = [("corpus", f"{raw_mb} MB of text ({input_mb:.0f} MB on disk, half gzip'd), {report['documents_in']:,} documents"),
            ("fmctl data prepare", f"{wall:.0f} s, {raw_mb / wall:.2f} MB/s, peak RSS {rss:.0f} MB "
                                   f"(clean+dedup {report['clean_dedup_s']:.0f} s, tokenizer {report['tokenizer_s']:.0f} s, "
                                   f"tokenise+pack {report['tokenize_pack_s']:.0f} s)"),
            ("removed", f"{report['removed_exact_duplicates']:,} exact, {report['removed_near_duplicates']:,} near duplicates"),
            ("plain tokenizer(text) loop", f"{base_wall:.0f} s, {raw_mb / base_wall:.2f} MB/s, peak RSS {base_rss:.0f} MB"),
            ("ratio prepare / plain loop (MB/s)", f"{base_wall / wall:.2f}x (prepare also cleans, dedups, trains and packs)")]
    rows += pretrain_rows(work)
    return rows


def pretrain_rows(work: Path) -> list[tuple[str, str]]:
    rows = []
    for recipe, kind in (("bert_mlm", "wordpiece"), ("gpt_clm", "bpe")):
        small = work / f"small_{kind}"
        corpus = work / "corpus"
        first = sorted(corpus.iterdir())[0]
        subprocess.run([*FMCTL, "data", "prepare", f"input={first}", f"out={small}", f"tokenizer.kind={kind}",
                        "tokenizer.vocab_size=8000", "dedup.near=false"], check=True, capture_output=True)
        run_dir = work / f"run_{recipe}"
        subprocess.run([*FMCTL, "pretrain", f"recipe={recipe}", f"data.prepared={small}", "backbone.size=mini",
                        "trainer.max_steps=40", "trainer.eval_every=1000", "trainer.log_every=5",
                        "trainer.progress=off", f"run_dir={run_dir}", "overwrite=true"], check=True, capture_output=True)
        train = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in train if r["event"] == "train"][1:]  # the first interval includes warm-up
        tps = statistics.median(r["tokens_per_s"] for r in train)
        mfu = statistics.median(r["mfu"] for r in train)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        rows.append((f"pretrain {recipe} (mini, seq 128, batch 32)",
                     f"{tps:,.0f} tokens/s, MFU {mfu:.1%} ({manifest['precision']})"))
    return rows


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("runs/bench/prepare")
    work.mkdir(parents=True, exist_ok=True)
    rows = main(size, work)
    for name, value in rows:
        print(f"{name:45s} {value}")
    write_section("prepare_bench", rows, "python tests/bench/prepare_bench.py " + " ".join(sys.argv[1:]),
                  "wall time, both cores (fmctl's defaults)")
