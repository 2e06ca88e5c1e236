"""Choosing what to quantize: int8 that keeps the task's answers on this CPU, or a
refusal that says what to try.

Every graph of the export is quantized with the CPU's settings (fmctl.export.quantize)
and judged on the run's validation data by the task: its predictions must agree with
PyTorch's (`--min-agreement`) and its validation metric may lose at most about one point
(`--max-metric-drop`). When that fails, the few nodes that move the outputs most are kept
in fp32: each candidate node is quantized alone (everything else fp32) and the change
of the outputs on a few validation batches is measured; then the 1, 2, 4, ... most
sensitive nodes (at most `--max-fp32-nodes`) are excluded until the checks pass. The
manifest records every attempt, the nodes kept in fp32 and how much each moved the
outputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fmctl.errors import ExportError
from fmctl.export import quantize as quant

# How many of the most sensitive nodes the manifest lists.
RANKING_SHOWN = 10


@dataclass
class Verdict:
    """One int8 attempt judged: the figures, and why it does not pass (empty: it passes).
    `payload` carries what the judge wants back for the attempt that passes."""

    figures: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    payload: Any = None

    @property
    def passed(self) -> bool:
        return not self.failures


def metric_check(before: float | None, after: float | None, units: int, max_drop: float, scale: float,
                 name: str) -> tuple[dict[str, Any], list[str]]:
    """The task metric before and after, in points (`scale` turns a fraction into points:
    100; BLEU is already in points: 1). "About one point": with fewer than 100 scored
    units (examples, windows) one unit is worth more than a point, and one may be lost."""
    if before is None or after is None:
        return {}, []
    drop = (before - after) * scale
    allowed = max(max_drop, scale / units if units and scale > 1 else 0.0)
    figures = {"metric": name, "before": round(before, 6), "after": round(after, 6), "drop_points": round(drop, 4),
               "allowed_drop_points": round(allowed, 4)}
    failures = [f"{name} {before * scale:.2f} -> {after * scale:.2f} (-{drop:.2f} points > {allowed:.2f})"] \
        if drop > allowed + 1e-9 else []
    return figures, failures


@dataclass
class Graphs:
    """The export's fp32 graphs (name -> file) and where their int8 versions go."""

    fp32: dict[str, Path]
    int8: dict[str, Path]


Judge = Callable[[dict[str, Path]], Verdict]            # int8 files -> verdict
Probe = Callable[[dict[str, Path]], list[Any]]          # graph files -> outputs on probe batches


def search(graphs: Graphs, mode: str, settings: quant.Int8Settings, judge: Judge, probe: Probe, max_fp32_nodes: int,
           workdir: Path, log: Callable[[str], None], calibration: quant.Calibration | None = None
           ) -> tuple[dict[str, Any], Verdict]:
    """Quantize every graph into graphs.int8 so that `judge` passes; returns the
    manifest's `quantization` record and the passing verdict, or raises ExportError with
    what to try."""
    prepared, notes = {}, set()
    for name, path in graphs.fp32.items():
        prepared[name], note = quant.prepare(path, workdir)
        notes.add(note)
    attempts: list[dict[str, Any]] = []
    verdict = _attempt(prepared, graphs.int8, mode, settings, [], judge, calibration, attempts, log)
    ranking: list[dict[str, Any]] = []
    if not verdict.passed and max_fp32_nodes > 0:
        ranking = sensitivity(prepared, mode, settings, probe, workdir, log, calibration)
        for count in _counts(min(max_fp32_nodes, len(ranking))):
            verdict = _attempt(prepared, graphs.int8, mode, settings, ranking[:count], judge, calibration, attempts,
                               log)
            if verdict.passed:
                break
    if not verdict.passed:
        raise ExportError(_advice(mode, settings, verdict, attempts[-1]["fp32_nodes"], max_fp32_nodes))
    kept = attempts[-1]["fp32_nodes"]
    record = {**quant.describe(mode, settings, calibration), "pre_pass": "; ".join(sorted(notes)),
              "attempts": attempts, "fp32_nodes": ranking[:kept],
              "sensitivity": {"measured": bool(ranking), "nodes": len(ranking), "top": ranking[:RANKING_SHOWN],
                              "how": "each node quantized alone, everything else fp32: mean |output change| over "
                                     "the probe batches, relative to the mean |fp32 output|"},
              "size_bytes": sum(quant.file_size(p) for p in graphs.int8.values()),
              "fp32_size_bytes": sum(quant.file_size(p) for p in graphs.fp32.values())}
    return record, verdict


def _counts(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`, and `limit` itself."""
    counts, n = [], 1
    while n < limit:
        counts.append(n)
        n *= 2
    return counts + ([limit] if limit else [])


def _attempt(prepared: dict[str, Path], out: dict[str, Path], mode: str, settings: quant.Int8Settings,
             keep: list[dict[str, Any]], judge: Judge, calibration: quant.Calibration | None,
             attempts: list[dict[str, Any]], log: Callable[[str], None]) -> Verdict:
    for name, path in prepared.items():
        excluded = [k["node"] for k in keep if k["graph"] == name]
        quant.quantize(path, out[name], mode, settings, exclude=excluded, calibration=calibration)
    verdict = judge(out)
    attempts.append({"fp32_nodes": len(keep), **verdict.figures, "passed": verdict.passed})
    kept = f"{len(keep)} most sensitive node{'s' if len(keep) != 1 else ''} in fp32" if keep else "all nodes int8"
    log(f"int8 ({kept}): {'passed' if verdict.passed else 'failed: ' + '; '.join(verdict.failures)}")
    return verdict


def sensitivity(prepared: dict[str, Path], mode: str, settings: quant.Int8Settings, probe: Probe, workdir: Path,
                log: Callable[[str], None], calibration: quant.Calibration | None = None) -> list[dict[str, Any]]:
    """Every candidate node ranked by how much quantizing it alone moves the outputs."""
    import numpy as np

    baseline = probe(dict(prepared))
    scale = [float(np.mean(np.abs(b))) or 1.0 for b in baseline]
    nodes = [(name, node, what) for name, path in prepared.items() for node, what in quant.candidates(path, mode)]
    log(f"int8: measuring how much each of {len(nodes)} nodes moves the outputs when quantized alone")
    ranking = []
    for name, node, what in nodes:
        single = workdir / f"single-{name}.onnx"
        quant.quantize(prepared[name], single, mode, settings, only=[node], calibration=calibration)
        outputs = probe({**prepared, name: single})
        moved = float(np.mean([np.mean(np.abs(o - b)) / s for o, b, s in zip(outputs, baseline, scale)]))
        ranking.append({"graph": name, "node": node, "computes": what, "sensitivity": round(moved, 6)})
        single.unlink()
    ranking.sort(key=lambda r: -r["sensitivity"])
    return ranking


def _advice(mode: str, settings: quant.Int8Settings, verdict: Verdict, kept: int, max_fp32_nodes: int) -> str:
    """One line: what failed, with what, and what to try next."""
    tried = f"per-channel {'7-bit' if settings.reduce_range else '8-bit'} weights for {settings.int8_path}"
    tried += f", the {kept} most sensitive nodes in fp32" if kept else ""
    tries = []
    if mode == "int8":
        tries.append("--quantize int8-static (activation ranges calibrated on the training data)")
    if max_fp32_nodes < 32:
        tries.append(f"--max-fp32-nodes {max(16, 2 * max_fp32_nodes)}")
    if not settings.reduce_range and settings.int8_path != "other":
        tries.append("--int8-target avx2 (7-bit weights)")
    tries.append("the fp32 export (no --quantize)")
    return (f"export: {mode} loses too much on this CPU ({'; '.join(verdict.failures)}) with {tried}; try "
            f"{', or '.join(tries)}; --min-agreement / --max-metric-drop accept more loss knowingly; "
            f"nothing was written")
