"""Each benchmark rewrites its own section of BENCHMARKS.md (between its markers), with
the machine, the versions and the command that reproduces it; the prose around the
sections is written by hand and kept."""
from __future__ import annotations

import platform
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"


def write_section(marker: str, rows: list[tuple[str, str]], command: str, how: str) -> None:
    import torch
    import transformers

    command = command.replace(f"{Path.cwd()}/", "")  # the reproduce line works from any clone
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                if line.startswith("model name")), "?")
    body = [f"Measured {time.strftime('%Y-%m-%d')} on {cpu} ({platform.machine()}), torch {torch.__version__}, "
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
