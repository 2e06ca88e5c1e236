"""GPU check of the fused kernels (run on a CUDA machine; a few minutes on an H200).

1. Correctness on the GPU: fused vs PyTorch for linear+cross-entropy (bf16, vocab 50257),
   LayerNorm and bias+GELU.
2. Loss memory and time at vocab 32000 and 50257: peak CUDA memory and CUDA-event time of
   forward+backward for the fused kernel, the plain PyTorch path and torch.compile of it.
3. A GPT-small pretraining step (12 layers, width 768, seq 1024, bf16) with
   trainer.kernels=triton and =torch: step time, peak memory, and MFU against the bf16
   matmul rate measured in this script.
Usage: python tests/bench/kernels_gpu_bench.py  (prints a table; paste it into BENCHMARKS.md)
"""
from __future__ import annotations

import torch


def timed(fn, repeats: int = 10) -> tuple[float, float]:
    """(median ms, peak MB above the baseline) of fn() on the GPU, with CUDA events."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2], (torch.cuda.max_memory_allocated() - base) / 2**20


def bf16_peak() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms, _ = timed(lambda: a @ b, repeats=20)
    return 2 * 8192**3 / (ms / 1e3)


def loss_rows(vocab: int, tokens: int = 16384, width: int = 768) -> list[tuple[str, str]]:
    from fmctl.kernels.cross_entropy import fused_linear_cross_entropy, reference_linear_cross_entropy

    hidden = torch.randn(tokens, width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(vocab, width, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device="cuda")
    compiled = torch.compile(reference_linear_cross_entropy)
    fused_loss = fused_linear_cross_entropy(hidden, weight, targets)
    plain_loss = reference_linear_cross_entropy(hidden, weight, targets)
    rows = [(f"vocab {vocab}: |fused - torch| loss", f"{(fused_loss - plain_loss).abs().item():.2e}")]
    for name, fn in (("fused", fused_linear_cross_entropy), ("torch", reference_linear_cross_entropy),
                     ("torch.compile", compiled)):
        ms, mb = timed(lambda: fn(hidden, weight, targets).backward())
        rows.append((f"vocab {vocab}: {name} fwd+bwd", f"{ms:.2f} ms, peak +{mb:.0f} MB"))
    return rows


def synthetic_corpus(documents: int = 3000, words_per_document: int = 400, seed: int = 0) -> str:
    """Text whose byte-level BPE fills a 32k vocabulary: 80,000 made-up words of one to four
    syllables, drawn with Zipf-like frequencies as natural words are."""
    import random

    rng = random.Random(seed)
    syllables = [c + v for c in "bdfghjklmnprstvwz" for v in "aeiou"] + ["str", "ing", "ion", "ent"]
    lexicon = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(80_000)})
    rng.shuffle(lexicon)
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
    return "\n".join(" ".join(rng.choices(lexicon, weights, k=words_per_document)) for _ in range(documents))


def gpt_step_rows(peak: float) -> list[tuple[str, str]]:
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    rows = []
    work = Path(tempfile.mkdtemp())
    corpus = work / "corpus.txt"
    corpus.write_text(synthetic_corpus())
    subprocess.run([sys.executable, "-m", "fmctl", "data", "prepare", f"input={corpus}", f"out={work / 'p'}",
                    "tokenizer.kind=bpe", "tokenizer.vocab_size=32000", "dedup.near=false"], check=True)
    from transformers import AutoTokenizer

    rows.append(("GPT-small vocabulary", f"{len(AutoTokenizer.from_pretrained(str(work / 'p' / 'tokenizer'))):,} "
                                         f"tokens (target 32k-50k)"))
    for kernels in ("triton", "torch"):
        run_dir = work / kernels
        subprocess.run([sys.executable, "-m", "fmctl", "pretrain", "recipe=gpt_clm", f"data.prepared={work / 'p'}",
                        "backbone.size=base", "backbone.max_positions=1024", "data.max_length=1024",
                        "trainer.batch_size=8", "trainer.max_steps=30", "trainer.log_every=5", "trainer.eval_every=1000",
                        "trainer.precision=bf16", f"trainer.kernels={kernels}", "trainer.progress=off",
                        f"run_dir={run_dir}"], check=True)
        import json
        import statistics

        train = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in train if r["event"] == "train"][1:]
        rows.append((f"GPT-small step, kernels={kernels}",
                     f"{statistics.median(r['tokens_per_s'] for r in train):,.0f} tokens/s, "
                     f"MFU {statistics.median(r['mfu'] for r in train):.1%} (peak {peak / 1e12:.0f} TFLOP/s), "
                     f"peak memory {max(r['peak_memory_mb'] for r in train):,.0f} MB"))
    return rows


def main() -> None:
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    peak = bf16_peak()
    rows = [("GPU", torch.cuda.get_device_name()), ("bf16 matmul peak", f"{peak / 1e12:.0f} TFLOP/s")]
    for vocab in (32000, 50257):
        rows += loss_rows(vocab)
    rows += gpt_step_rows(peak)
    for name, value in rows:
        print(f"{name:40s} {value}")


if __name__ == "__main__":
    main()
