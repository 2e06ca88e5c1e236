"""The ONNX format: model.onnx (one forward pass with named outputs), checked against
PyTorch on real validation batches, optionally quantized to int8 for this CPU; a causal
LM also gets decoder_with_past.onnx, and a translation model its own graphs
(fmctl.export.translation).

With --quantize the fp32 graph is made in the scratch folder and checked first, then
int8 is searched for (fmctl.export.int8): quantized with the CPU's settings, judged by
the task's agreement with PyTorch and its validation metric, with the most sensitive
nodes kept in fp32 when that is what passing takes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.export.context import (DEFAULT_INT8_AGREEMENT, Context, check, evaluation, ort_candidate,
                                  parity_record)

# Examples the sensitivity of each node is measured on (the first parity batches).
PROBE_EXAMPLES = 96


def write_onnx(ctx: Context, folder: Path) -> dict[str, Any]:
    """model.onnx in `folder` (a several-graph task: <graph>.onnx, one call per graph; int8
    with --quantize), and the figures that vouch for it."""
    import torch

    from fmctl.export import onnx as onnx_mod
    from fmctl.export.measure import latency_record

    opts, io = ctx.options, ctx.io
    if io.translates:
        from fmctl.export import translation

        return translation.write(ctx, folder)
    names = io.input_names()
    path = folder / f"{io.file_stem}.onnx"
    fp32_path = ctx.scratch / path.name if opts.quantize else path
    info = onnx_mod.export_onnx(ctx.module, ctx.example(), names, io.output_names, io.dynamic_axes(), fp32_path,
                                opset=opts.opset, exporter=opts.exporter, max_sequence=io.max_sequence(),
                                output_axes=io.output_axes())
    ctx.log(f"onnx: written by the {info['exporter']} exporter, opset {opts.opset}; onnx.checker passed")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    threads = torch.get_num_threads()
    sessions = {"onnx_fp32": onnx_mod.session(fp32_path, threads)}
    fp32_parity, fp32_cmp = check(ctx, ort_candidate(sessions["onnx_fp32"], names), "onnxruntime fp32",
                                  opts.atol, None if opts.quantize else opts.min_agreement)
    out: dict[str, Any] = {"files": {"model": path.name}, "onnx": info, "parity": parity_record(ctx, fp32_parity)}
    comparisons = {"onnx_fp32": fp32_cmp}
    if opts.quantize:
        record, int8_parity, comparisons["onnx_int8"], sessions["onnx_int8"] = _quantized(ctx, fp32_path, path,
                                                                                           threads)
        out["quantization"], out["parity_int8"] = record, parity_record(ctx, int8_parity)
    out["evaluation"] = evaluation(ctx, comparisons)
    if io.generates_text:
        out.update(_write_kv_cache(ctx, folder))
    if opts.quantize or opts.benchmark:
        feeds = {size: io.batch_of(size).inputs for size in (1, 32)}
        runners = {"pytorch_fp32": ctx.reference()}
        runners.update({name: ort_candidate(s, names) for name, s in sessions.items()})
        out["latency"] = latency_record(runners, feeds, threads)
    if opts.quantize:
        ctx.log(summary_line(out))
    out.update(onnx_mod.graph_io(path))
    return out


def _quantized(ctx: Context, fp32_path: Path, path: Path, threads: int) -> tuple[dict[str, Any], Any, Any, Any]:
    """The int8 graph written to `path` for this CPU: its record, parity, comparison and session."""
    from fmctl.export import int8
    from fmctl.export import onnx as onnx_mod
    from fmctl.export import parity as parity_mod
    from fmctl.export import quantize as quant

    opts, io, names = ctx.options, ctx.io, ctx.io.input_names()
    settings = quant.settings_for(opts.int8_target, opts.quantize)
    ctx.log(f"int8: {opts.quantize} for {settings.int8_path} ({settings.chosen_for}): per-channel "
            f"{'7-bit' if settings.reduce_range else '8-bit'} weights")
    agreement = DEFAULT_INT8_AGREEMENT if opts.min_agreement is None else opts.min_agreement
    reference = ctx.reference_outputs()

    def judge(paths: dict[str, Path]) -> int8.Verdict:
        session = onnx_mod.session(paths["model"], threads)
        result, comparison = parity_mod.compare(ctx.batches, reference, ort_candidate(session, names),
                                                ("pytorch fp32", f"onnxruntime {opts.quantize}"), None, agreement,
                                                io.measure())
        figures = {"agreement": result.label_agreement, "agreement_measure": result.agreement,
                   "min_agreement": agreement}
        failures = [] if result.passed else [f"{result.agreement} agreement {result.label_agreement or 0:.4f} "
                                             f"< {agreement:g}"]
        metric, lost = int8.metric_check(comparison.accuracy("reference"), comparison.accuracy("candidate"),
                                         comparison.units("reference"), opts.max_metric_drop, 100.0,
                                         comparison.measure.metric or "metric")
        return int8.Verdict({**figures, **metric}, failures + lost, (session, result, comparison))

    probe_batches = _probe_batches(ctx)

    def probe(paths: dict[str, Path]) -> list[Any]:
        session = onnx_mod.session(paths["model"], threads)
        run = ort_candidate(session, names)
        return [o for batch in probe_batches for o in run(batch.inputs)]

    calibration = quant.Calibration(lambda: _calibration_feeds(ctx), ctx.scratch / "calibration.json") \
        if opts.quantize == "int8-static" else None
    graphs = int8.Graphs({"model": fp32_path}, {"model": path})
    record, verdict = int8.search(graphs, opts.quantize, settings, judge, probe, opts.max_fp32_nodes, ctx.scratch,
                                  ctx.log, calibration)
    session, result, comparison = verdict.payload
    result.min_agreement = agreement
    ctx.log(f"parity: {result.summary()}")
    return {**record, "cpu": _cpu()}, result, comparison, session


def _cpu() -> dict[str, Any]:
    from fmctl import cpu

    return cpu.describe()


def _probe_batches(ctx: Context) -> list[Any]:
    """The first parity batches, about PROBE_EXAMPLES examples: enough to see which node
    moves the outputs, few enough to run once per node."""
    chosen, seen = [], 0
    for batch in ctx.batches:
        if seen >= PROBE_EXAMPLES:
            break
        chosen.append(batch)
        seen += len(next(iter(batch.inputs.values())))
    return chosen


def summary_line(out: dict[str, Any]) -> str:
    """int8 before and after in one line: size, the metric, latency at batch 1 and 32."""
    q = out["quantization"]
    parts = [f"size {q['fp32_size_bytes'] / 1e6:.2f} MB -> {q['size_bytes'] / 1e6:.2f} MB "
             f"({q['fp32_size_bytes'] / max(1, q['size_bytes']):.1f}x smaller)"]
    last = q["attempts"][-1]
    if "before" in last:
        parts.append(f"{last['metric']} {last['before']:.4f} -> {last['after']:.4f}")
    if last.get("agreement") is not None:
        parts.append(f"{last['agreement_measure']} agreement {last['agreement']:.4f}")
    results = out.get("latency", {}).get("results", {})
    if "onnx_fp32" in results and "onnx_int8" in results:
        fp32, int8 = results["onnx_fp32"], results["onnx_int8"]
        parts.append(f"latency @1 {fp32['batch_1_ms']:.2f} -> {int8['batch_1_ms']:.2f} ms, "
                     f"@32 {fp32['batch_32_ms']:.2f} -> {int8['batch_32_ms']:.2f} ms")
    kept = len(q.get("fp32_nodes", []))
    return f"int8: {'; '.join(parts)}" + (f"; {kept} node{'s' if kept != 1 else ''} kept in fp32" if kept else "")


def _write_kv_cache(ctx: Context, folder: Path) -> dict[str, Any]:
    """A causal LM's decoder_with_past.onnx for generation, fp32 exports only; a graph that
    cannot be captured or does not decode as PyTorch does is left out (model.onnx still
    generates, without a cache) and the manifest says why."""
    from fmctl.export import kv_cache

    if ctx.options.quantize:
        return {"kv_cache": {"written": False, "reason": "quantized exports generate with model.onnx (no cache)"}}
    batch = ctx.io.batch_of(kv_cache.PARITY_PROMPTS).inputs
    room = max(4, (ctx.io.max_sequence() or 64) - kv_cache.PARITY_STEPS - 1)
    prompts = [[int(t) for t, keep in zip(ids, mask) if keep][: min(12, room)] or [int(ids[0])]
               for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())]
    try:
        entry = kv_cache.write(ctx.model, prompts, folder / kv_cache.FILE_NAME, ctx.options.opset, ctx.options.atol)
    except Exception as exc:  # torch.export raises many types for models it cannot capture
        (folder / kv_cache.FILE_NAME).unlink(missing_ok=True)
        reason = " ".join(str(exc).split())[:200]
        ctx.log(f"kv cache: not written ({type(exc).__name__}: {reason}); generation uses model.onnx")
        return {"kv_cache": {"written": False, "reason": f"{type(exc).__name__}: {reason}"}}
    ctx.log(f"kv cache: {kv_cache.FILE_NAME} decodes as PyTorch does "
            f"(max abs diff {entry['parity']['max_abs_diff']:.2g} over {entry['parity']['prompts']} prompts)")
    return {"kv_cache": {"written": True, **entry}}


def _calibration_feeds(ctx: Context) -> Any:
    """Training-split batches as numpy feeds, for static quantization's activation ranges."""
    io, opts = ctx.io, ctx.options
    data = io.task.export_data(io.run, io.model_dir, "train")
    names = io.input_names()
    count = min(opts.calibration_examples, len(data.train))
    for start in range(0, count, 16):
        batch = data.collate([data.train[i] for i in range(start, min(count, start + 16))])
        yield {n: batch[n].numpy() for n in names}
