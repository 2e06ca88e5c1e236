"""ONNX generation with and without the export's key/value cache (decoder_with_past.onnx).

A GPT (4 layers, width 256, 1024 positions) is pretrained for a few steps on a synthetic
corpus and exported to ONNX; the same OnnxGenerator then decodes greedily from a short
prompt with the cache graph and with model.onnx alone (the whole sequence every step),
alternating, median of the rounds. End-of-text is ignored so both write every token.
Usage: python tests/bench/generate_bench.py [new_tokens] [rounds] [work_dir]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def build_export(work: Path) -> Path:
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(3000)), encoding="utf-8")
    fmctl = [sys.executable, "-m", "fmctl"]
    subprocess.run([*fmctl, "data", "prepare", f"input={corpus}", f"out={work / 'p'}", "tokenizer.kind=bpe",
                    "tokenizer.vocab_size=1000", "dedup.near=false", "overwrite=true"], check=True, capture_output=True)
    subprocess.run([*fmctl, "pretrain", "recipe=gpt_clm", f"data.prepared={work / 'p'}", "backbone.hidden_size=256",
                    "backbone.num_layers=4", "backbone.num_heads=4", "backbone.max_positions=1024",
                    "data.max_length=128", "trainer.max_steps=5", "trainer.progress=off", f"run_dir={work / 'run'}",
                    "overwrite=true"], check=True, capture_output=True)
    subprocess.run([*fmctl, "export", str(work / "run"), "--format", "onnx"], check=True, capture_output=True)
    return work / "run" / "export" / "onnx"


class _NeverEnds:
    """The export's tokenizer with no end-of-text id, so decoding never stops early."""

    eos_token_id = -1

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def main() -> None:
    new_tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(sys.argv[3] if len(sys.argv) > 3 else "runs/bench/generate").resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    folder = build_export(work)
    from fmctl.predict.generate import GenerationSettings, OnnxGenerator

    cached = OnnxGenerator(folder)
    assert cached.cached is not None, "the export has no decoder_with_past.onnx"
    plain = OnnxGenerator(folder)
    plain.cached = None
    for generator in (cached, plain):
        generator.tokenizer = _NeverEnds(generator.tokenizer)  # every run writes new_tokens tokens
    settings = GenerationSettings(max_new_tokens=new_tokens)
    prompt = ["w1 w2 w3 w4"]
    assert cached(prompt, settings) == plain(prompt, settings), "greedy text differs with and without the cache"
    seconds: dict[str, list[float]] = {"cache": [], "no cache": []}
    for _ in range(rounds):
        for name, generator in (("cache", cached), ("no cache", plain)):
            start = time.process_time()
            generator(prompt, settings)
            seconds[name].append(time.process_time() - start)
    with_cache, without = statistics.median(seconds["cache"]), statistics.median(seconds["no cache"])
    rows = [("new tokens per prompt", str(new_tokens)),
            ("with decoder_with_past.onnx", f"{new_tokens / with_cache:,.0f} tokens per CPU-second"),
            ("model.onnx only (whole sequence each step)", f"{new_tokens / without:,.0f} tokens per CPU-second"),
            ("speed-up", f"{without / with_cache:.1f}x (greedy text identical)")]
    for name, value in rows:
        print(f"{name:45s} {value}")
    from tests.bench.benchmarks_md import write_section

    write_section("generate", rows, f"python tests/bench/generate_bench.py {new_tokens} {rounds}",
                  "a GPT 4x256 with 1024 positions exported to ONNX, greedy decoding from a 4-token prompt in "
                  "onnxruntime (one thread), process CPU time, median of alternated rounds")


if __name__ == "__main__":
    main()
