"""Each benchmark rewrites its own section of BENCHMARKS.md (between its markers), with
the machine, the versions and the command that reproduces it; the prose around the
sections is written by hand and kept."""
from __future__ import annotations

import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"
sys.path.insert(0, str(BENCHMARKS.parent))  # fmctl from this checkout


def write_section(marker: str, rows: list[tuple[str, str]], command: str, how: str) -> None:
    import torch
    import transformers

    from fmctl import cpu

    command = command.replace(f"{Path.cwd()}/", "")  # the reproduce line works from any clone
    # the CPU's instruction set decides bf16 and int8 speed (and int8 accuracy): stated with every section
    body = [f"Measured {time.strftime('%Y-%m-%d')} on {cpu.summary()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}; {how}; reproduce with `{command}`.", "",
            "| measure | result |", "|---|---|"]
    body += [f"| {name} | {value} |" for name, value in rows]
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    BENCHMARKS.write_text(head + start + "\n" + "\n".join(body) + "\n" + end + rest.split(end, 1)[1],
                          encoding="utf-8")
