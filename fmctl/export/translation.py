"""Translation's ONNX export: the graphs a generator is served with, checked by translating.

A T5 or an encoder_decoder (EncoderDecoderModel) is written as encoder.onnx +
decoder_with_past.onnx (fmctl.export.seq2seq_graphs), a GPT as decoder_with_past.onnx (fmctl.export.kv_cache, as a clm export writes it). The
export is kept only when, on the run's validation data,

- the teacher-forced logits of the graphs are within --atol of PyTorch's forward (the
  same figures every export records), and
- greedy translations through the graphs (fmctl.predict.translate, the loop `fmctl
  predict` runs, torch-free) are PyTorch's greedy translations token for token, for
  every validation source checked.

With --quantize int8 the graphs are quantized for this CPU (fmctl.export.int8) and judged
by teacher-forced next-token agreement and by BLEU: it may lose at most --max-metric-drop
BLEU points against the fp32 translations. BLEU before and after, the share of
translations int8 leaves unchanged, sizes and the time to translate 1 and 32 sources are
recorded. Decoding is greedy; a run whose task.generation.num_beams is above 1 is
translated greedily by the export (the manifest says so).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from fmctl.errors import ExportError
from fmctl.export.context import DEFAULT_INT8_AGREEMENT, Context, check, parity_record

CHUNK = 32   # sources per decoding call, on both sides (a GPT's room depends on the batch)
TARGET_TOKENIZER = "target_tokenizer"   # the decoder's own tokenizer, when it has one


def write(ctx: Context, folder: Path) -> dict[str, Any]:
    """The graphs in `folder` (int8 with --quantize) and the figures that vouch for them."""
    import torch

    from fmctl.export.measure import latency_record

    opts, io, task = ctx.options, ctx.io, ctx.io.task
    if opts.quantize == "int8-static":
        raise ExportError("export: --quantize int8-static is not offered for translation (its decoder reads a "
                          "cache that grows every step, which calibration batches do not cover); use --quantize int8")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    threads = torch.get_num_threads()
    rows = (io.data.rows.get(io.parity_split) or [])[: opts.max_examples]
    if not rows:
        raise ExportError("export: no validation sources to check the translation graphs against")
    sources, references = [r.source for r in rows], [r.target for r in rows]
    prompts = task.source_ids(sources, io.run.data.max_length)
    fp32_dir = ctx.scratch / "fp32" if opts.quantize else folder
    fp32_dir.mkdir(parents=True, exist_ok=True)
    out = _write_graphs(ctx, prompts, fp32_dir)
    layout = _layout(ctx, out.pop("shape"))
    fp32 = {role: fp32_dir / name for role, name in out["files"].items()}
    sessions = {"onnx_fp32": _sessions(fp32, threads)}
    tf_parity, _ = check(ctx, _teacher_forced(layout, sessions["onnx_fp32"]), "onnxruntime fp32 (teacher-forced)",
                         opts.atol, None)
    reference_ids = _in_chunks(lambda chunk: task.generate_ids(ctx.model, chunk, num_beams=1), prompts)
    onnx_ids = _in_chunks(_decoder(layout, sessions["onnx_fp32"]), prompts)
    same = _require_identical(reference_ids, onnx_ids, sources, task.texts)
    ctx.log(f"parity: greedy translations through the graphs are PyTorch's for all {same} validation sources")
    texts = {"pytorch_fp32": task.texts(reference_ids), "onnx_fp32": task.texts(onnx_ids)}
    out.update(parity=parity_record(ctx, tf_parity), decoding=asdict(layout) | _decoding_notes(ctx, task, folder),
               translation_parity=_identity_record(same, len(prompts), ctx))
    if opts.quantize:
        record, int8_parity, int8_ids, sessions["onnx_int8"] = _quantized(ctx, layout, fp32, folder, prompts,
                                                                            references, texts["onnx_fp32"], threads)
        texts["onnx_int8"] = task.texts(int8_ids)
        out.update(quantization=record, parity_int8=parity_record(ctx, int8_parity),
                   translation_parity_int8=_identity_record(_count_same(reference_ids, int8_ids), len(prompts), ctx))
    out["evaluation"] = _bleu(ctx, texts, references)
    if opts.quantize or opts.benchmark:
        feeds = {size: (prompts * size)[:size] for size in (1, 32)}
        runners: dict[str, Callable[[Any], Any]] = {
            "pytorch_fp32": lambda feed: task.generate_ids(ctx.model, feed, num_beams=1)}
        runners.update({name: _decoder(layout, s) for name, s in sessions.items()})
        out["latency"] = latency_record(runners, feeds, threads, "greedy translation of real validation sources")
    if opts.quantize:
        from fmctl.export.onnx_writer import summary_line

        ctx.log(summary_line(out))
    return out


def _write_graphs(ctx: Context, prompts: list[list[int]], folder: Path) -> dict[str, Any]:
    """The graphs in `folder`: {'files', 'graphs', 'onnx', 'shape'}."""
    from fmctl.export import onnx as onnx_mod

    try:
        if ctx.io.task.decoder_only:
            from fmctl.export import kv_cache

            entry = kv_cache.write(ctx.model, [p[:12] for p in prompts[: kv_cache.PARITY_PROMPTS]],
                                   folder / kv_cache.FILE_NAME, ctx.options.opset, ctx.options.atol)
            written = {"files": {"decoder": kv_cache.FILE_NAME},
                       "graphs": {"decoder": onnx_mod.graph_io(folder / kv_cache.FILE_NAME)},
                       "shape": {k: entry[k] for k in ("layers", "heads", "head_dim")},
                       "onnx": {"exporter": "dynamo", "opset": ctx.options.opset,
                                **onnx_mod.check(folder / kv_cache.FILE_NAME)}}
        else:
            from fmctl.export import seq2seq_graphs

            written = seq2seq_graphs.write_encoder_decoder(ctx.model, prompts, folder, ctx.options.opset)
    except ExportError:
        raise
    except Exception as exc:  # torch.export raises many types for models it cannot capture
        reason = " ".join(str(exc).split())[:200]
        raise ExportError(f"export: the translation graphs could not be written ({type(exc).__name__}: {reason}); "
                          f"--format hf serves this run without ONNX") from None
    ctx.log(f"onnx: {', '.join(written['files'].values())} written by the dynamo exporter, opset "
            f"{ctx.options.opset}; onnx.checker passed")
    return written


def _layout(ctx: Context, shape: dict[str, int]) -> Any:
    from fmctl.predict.translate import Layout

    task, model, run = ctx.io.task, ctx.model, ctx.io.run
    tokenizer = task.target_tokenizer  # what the decoder writes: its end and pad tokens
    positions = getattr(model.config, "max_position_embeddings", None) if task.decoder_only else None
    return Layout(decoder_only=task.decoder_only, layers=shape["layers"], heads=shape["heads"],
                  head_dim=shape["head_dim"], eos_id=int(tokenizer.eos_token_id), pad_id=int(tokenizer.pad_token_id),
                  start_id=None if task.decoder_only else int(model.config.decoder_start_token_id),
                  max_new_tokens=int(run.task.generation.max_new_tokens),
                  max_positions=int(positions) if positions else None)


def _decoding_notes(ctx: Context, task: Any, folder: Path) -> dict[str, Any]:
    """What the manifest adds to the layout: the separator, how a source is framed (T5:
    `source </s>`, an EncoderDecoderModel: `[CLS] source [SEP]`), the decoder's own
    tokenizer (copied into `folder` when it has one), and that decoding is greedy."""
    beams = int(ctx.io.run.task.generation.num_beams)
    start, end = ([], []) if task.decoder_only else task.source_frame()
    notes: dict[str, Any] = {"strategy": "greedy", "separator_id": None, "source_start_ids": [int(i) for i in start],
                             "source_end_ids": [int(i) for i in end], "target_tokenizer_file": None}
    if task.decoder_only:
        notes["separator_id"] = int(task.tokenizer.convert_tokens_to_ids(task.cfg.separator))
    if task.target_tokenizer is not task.tokenizer:
        task.target_tokenizer.save_pretrained(str(folder / TARGET_TOKENIZER))
        notes["target_tokenizer_file"] = f"{TARGET_TOKENIZER}/tokenizer.json"
    if beams > 1:
        notes["note"] = f"the run evaluates with num_beams={beams}; this export decodes greedily"
        ctx.log(f"note: the run evaluates with task.generation.num_beams={beams}; the ONNX export decodes greedily")
    return notes


def _sessions(files: dict[str, Path], threads: int) -> dict[str, Any]:
    from fmctl.export import onnx as onnx_mod

    return {role: onnx_mod.session(path, threads) for role, path in files.items()}


def _decoder(layout: Any, sessions: dict[str, Any]) -> Callable[[list[list[int]]], list[list[int]]]:
    from fmctl.predict.translate import GreedyDecoder

    return GreedyDecoder(layout, sessions)


def _teacher_forced(layout: Any, sessions: dict[str, Any]) -> Callable[[dict[str, Any]], list[Any]]:
    from fmctl.predict.translate import teacher_forced

    def run(inputs: dict[str, Any]) -> list[Any]:
        return [teacher_forced(layout, sessions, {k: v.numpy() for k, v in inputs.items()})]

    return run


def _in_chunks(decode: Callable[[list[list[int]]], list[list[int]]], prompts: list[list[int]]) -> list[list[int]]:
    return [ids for start in range(0, len(prompts), CHUNK) for ids in decode(prompts[start:start + CHUNK])]


def _count_same(a: list[list[int]], b: list[list[int]]) -> int:
    return sum(x == y for x, y in zip(a, b))


def _require_identical(reference: list[list[int]], candidate: list[list[int]], sources: list[str],
                       texts: Callable[[list[list[int]]], list[str]]) -> int:
    same = _count_same(reference, candidate)
    if same < len(reference):
        i = next(k for k, (x, y) in enumerate(zip(reference, candidate)) if x != y)
        pytorch, onnx = texts([reference[i], candidate[i]])
        raise ExportError(f"export: greedy translations through the ONNX graphs differ from PyTorch's for "
                          f"{len(reference) - same} of {len(reference)} validation sources (first: '{sources[i]}' -> "
                          f"'{pytorch}' in PyTorch, '{onnx}' in ONNX); nothing was written")
    return same


def _identity_record(same: int, total: int, ctx: Context) -> dict[str, Any]:
    return {"examples": total, "identical": same, "agreement": round(same / max(1, total), 6), "strategy": "greedy",
            "split": ctx.io.parity_split, "reference": "PyTorch generate(), num_beams=1, same batches"}


def _bleu(ctx: Context, texts: dict[str, list[str]], references: list[str]) -> dict[str, Any]:
    from fmctl.tasks.seq2seq import translation_scores

    scores = {name: round(translation_scores(hyp, references)["bleu"], 4) for name, hyp in texts.items()}
    return {"split": ctx.io.parity_split, "examples": len(references), "metric": "bleu", "decoding": "greedy",
            "scores": scores}


def _quantized(ctx: Context, layout: Any, fp32: dict[str, Path], folder: Path, prompts: list[list[int]],
               references: list[str], fp32_texts: list[str], threads: int) -> tuple[dict[str, Any], Any, Any, Any]:
    """int8 graphs in `folder` that keep BLEU; their record, teacher-forced parity, ids and sessions."""
    from fmctl import cpu
    from fmctl.export import int8
    from fmctl.export import parity as parity_mod
    from fmctl.export import quantize as quant
    from fmctl.tasks.seq2seq import translation_scores

    opts, io, task = ctx.options, ctx.io, ctx.io.task
    settings = quant.settings_for(opts.int8_target, opts.quantize)
    ctx.log(f"int8: {opts.quantize} for {settings.int8_path} ({settings.chosen_for}): per-channel "
            f"{'7-bit' if settings.reduce_range else '8-bit'} weights")
    agreement = DEFAULT_INT8_AGREEMENT if opts.min_agreement is None else opts.min_agreement
    reference = ctx.reference_outputs()
    bleu_fp32 = translation_scores(fp32_texts, references)["bleu"]

    def judge(paths: dict[str, Path]) -> int8.Verdict:
        sessions = _sessions(paths, threads)
        result, _ = parity_mod.compare(ctx.batches, reference, _teacher_forced(layout, sessions),
                                       ("pytorch fp32", f"onnxruntime {opts.quantize} (teacher-forced)"), None,
                                       agreement, io.measure())
        ids = _in_chunks(_decoder(layout, sessions), prompts)
        bleu = translation_scores(task.texts(ids), references)["bleu"]
        figures = {"agreement": result.label_agreement, "agreement_measure": result.agreement,
                   "min_agreement": agreement}
        failures = [] if result.passed else [f"{result.agreement} agreement {result.label_agreement or 0:.4f} "
                                             f"< {agreement:g}"]
        metric, lost = int8.metric_check(bleu_fp32, bleu, len(prompts), opts.max_metric_drop, 1.0, "bleu")
        return int8.Verdict({**figures, **metric}, failures + lost, (sessions, result, ids))

    probe_batches = ctx.batches[:3]

    def probe(paths: dict[str, Path]) -> list[Any]:
        run = _teacher_forced(layout, _sessions(paths, threads))
        return [o for batch in probe_batches for o in run(batch.inputs)]

    graphs = int8.Graphs(fp32, {role: folder / path.name for role, path in fp32.items()})
    record, verdict = int8.search(graphs, opts.quantize, settings, judge, probe, opts.max_fp32_nodes, ctx.scratch,
                                  ctx.log, None)
    sessions, result, ids = verdict.payload
    ctx.log(f"parity: {result.summary()}")
    return {**record, "cpu": cpu.describe()}, result, ids, sessions
