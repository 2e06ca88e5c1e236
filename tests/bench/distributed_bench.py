"""`make bench` (scale-out part): time per optimizer step of one process against two
(DDP, then FSDP) on this machine, for the same global batch and the same steps.

On a 2-core CPU two processes share the cores a single process would use with two
threads, so a ratio near 1 is the expected ceiling; the point is the overhead of the
gradient all-reduce (DDP) and of the parameter all-gathers (FSDP). GPU scaling needs a
multi-GPU machine and is not measured here.
Usage: python tests/bench/distributed_bench.py [WORK_DIR]
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_md import write_section  # noqa: E402

COMMON = ["recipe=bert_topics", "backbone.size=mini", "trainer.max_steps=60", "trainer.log_every=5",
          "trainer.eval_every=1000", "trainer.progress=off", "trainer.precision=fp32"]


def step_time(run_dir: Path) -> float:
    """Median seconds per step between log lines (the first interval includes warm-up)."""
    train = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [(r["step"], r["elapsed_s"]) for r in train if r["event"] == "train"]
    return statistics.median((t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in zip(times[1:], times[2:]))


def run(work: Path, name: str, extra: list[str]) -> float:
    run_dir = work / name
    subprocess.run([sys.executable, "-m", "fmctl", "finetune", *COMMON, *extra, f"run_dir={run_dir}",
                    "overwrite=true"], check=True, capture_output=True)
    return step_time(run_dir)


def main(work: Path) -> list[tuple[str, str]]:
    one = run(work, "one", ["trainer.batch_size=32"])
    ddp = run(work, "ddp", ["trainer.batch_size=16", "trainer.nproc=2"])
    fsdp = run(work, "fsdp", ["trainer.batch_size=16", "trainer.nproc=2", "trainer.strategy=fsdp"])
    return [("1 process, batch 32 (BERT mini)", f"{one * 1000:.0f} ms/step"),
            ("2 processes DDP, batch 16 each", f"{ddp * 1000:.0f} ms/step, {one / ddp:.2f}x the single process"),
            ("2 processes FSDP, batch 16 each", f"{fsdp * 1000:.0f} ms/step, {one / fsdp:.2f}x the single process"),
            ("1 -> N GPUs", "not measured (no multi-GPU machine)")]


if __name__ == "__main__":
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/bench/distributed")
    work.mkdir(parents=True, exist_ok=True)
    rows = main(work)
    for name, value in rows:
        print(f"{name:40s} {value}")
    write_section("distributed_bench", rows, "python tests/bench/distributed_bench.py " + " ".join(sys.argv[1:]),
                  "wall time per step, fp32, torch's default threads per process")
