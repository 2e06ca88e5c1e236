"""`make bench`: PyTorch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8 on this CPU.

Fine-tunes the shipped BERT (bert_topics) and ViT (vit_digits) recipes for a few hundred
steps, exports each with `--quantize int8` (which checks parity and times all three on real
validation batches of 1 and 32), and prints latency and throughput as ratios to PyTorch
eager. Usage: python tests/bench/export_bench.py [OUT_DIR]   (default runs/bench)
FMCTL_BENCH_THREADS=1 times single-threaded, which is steadier on a shared machine
(PyTorch's OpenMP threads spin when another process holds the cores).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

THREADS = int(os.environ["FMCTL_BENCH_THREADS"]) if os.environ.get("FMCTL_BENCH_THREADS") else None
SKIP_TRAINING = os.environ.get("FMCTL_BENCH_REUSE") == "1"   # re-time runs already in OUT_DIR
RECIPES = {"bert": ("bert_topics", ["trainer.max_steps=150", "trainer.progress=off"]),
           "vit": ("vit_digits", ["trainer.max_steps=150", "trainer.progress=off"])}


def main(root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from fmctl import cpu, pipeline
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.validate import validate
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    console = Console()
    table = Table(title=f"ONNX Runtime vs PyTorch eager on {cpu.summary()}, threads={THREADS or 'default'} "
                        f"(ratios: higher is better)", title_justify="left")
    for column in ("model", "runtime", "precision", "val acc", "batch 1 ms", "batch 32 ms", "speed-up @1",
                   "throughput x @32"):
        table.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    for name, (recipe, overrides) in RECIPES.items():
        run_dir = root / name
        checked = preflight(parse_invocation([f"recipe={recipe}", *overrides, f"run_dir={run_dir}", "overwrite=true"]))
        if not (SKIP_TRAINING and (run_dir / "model").is_dir()):
            pipeline.finetune(validate(checked.config), checked.config, console=Console(file=open(os.devnull, "w")))
        result = export_run(run_dir, ExportOptions(fmt="onnx", quantize="int8", threads=THREADS), log=console.print)
        latency = result.manifest["latency"]["results"]
        accuracy = result.manifest["evaluation"]["accuracy"]
        eager = latency["pytorch_fp32"]
        for runtime, row in latency.items():
            table.add_row(name, runtime, result.manifest["latency"]["precision"][runtime], f"{accuracy[runtime]:.4f}",
                          f"{row['batch_1_ms']:.2f}", f"{row['batch_32_ms']:.2f}",
                          f"{eager['batch_1_ms'] / row['batch_1_ms']:.2f}",
                          f"{row['batch_32_per_s'] / eager['batch_32_per_s']:.2f}")
        (root / f"{name}_latency.json").write_text(json.dumps(result.manifest["latency"], indent=2))
    console.print(table)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/bench"))
