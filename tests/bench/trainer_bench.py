"""`make bench` (fine-tuning part): fmctl's loop against the Hugging Face Trainer on the
same model, data, batch size and number of optimizer steps.

Contenders (each run in a fresh child process, alternated A B C A B C ... and reported as
medians, because this machine is shared and noisy):
  fmctl        fmctl's default configuration (length-grouped batches, fused AdamW, SDPA,
               precision=auto), driven through fmctl's own data, model and fit().
  hf_default   transformers.Trainer with its defaults and DataCollatorWithPadding.
  hf_best      Trainer with its best settings here: train_sampling_strategy=group_by_length,
               SDPA, fused AdamW, and bf16 where the CPU does it natively.
All use one thread (torch.set_num_threads(1)); the figure is real (non-padding) tokens
per second of process CPU time spent in the training call, so other load on the machine
does not bias the ratio. The machine's limit is measured in the same run (fp32 and bf16
2048^3 matmuls) and model FLOPs utilisation is reported against it.
Also: GPT causal-LM and BERT masked-LM pretraining (hidden 512, packed 128-token rows) in
tokens per CPU-second and MFU, ViT image classification in images per CPU-second, and,
once per contender, the validation accuracy fmctl and hf_best reach in ACCURACY_STEPS steps.
The table is printed and written to BENCHMARKS.md (between this benchmark's markers).
Usage: python tests/bench/trainer_bench.py [STEPS] [ROUNDS] [WORK_DIR] [ACCURACY_STEPS (default 0)]
       python tests/bench/trainer_bench.py --accuracy [STEPS] [SEEDS] [WORK_DIR]   (10% noisy labels)
       python tests/bench/trainer_bench.py --checkpointing [STEPS] [ROUNDS] [WORK_DIR]   (memory vs speed)
       python tests/bench/trainer_bench.py --compile [STEPS] [ROUNDS] [WORK_DIR]   (torch.compile: gain and cost)
       python tests/bench/trainer_bench.py --dropout [REPEATS] [ROUNDS]   (one dropout: torch's masks vs packed)
       python tests/bench/trainer_bench.py --ablate [STEPS] [ROUNDS] [WORK_DIR]
         (fmctl's default against itself with one choice undone: what each choice is worth)
       python tests/bench/trainer_bench.py --against REF [STEPS] [ROUNDS] [WORK_DIR]
         (fmctl's fine-tuning at git commit REF against this checkout: a regression check)
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_md import write_section  # noqa: E402

SHAPE = {"hidden_size": 512, "num_layers": 4, "num_heads": 8}
BATCH = 32
MAX_LENGTH = 128

DRIVER = r'''
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
contender, work, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
shape = json.loads(sys.argv[4]); batch = int(sys.argv[5]); max_length = int(sys.argv[6])
train, val, tok_dir = work / "train.csv", work / "validation.csv", work / "tokenizer"

def report(seconds, cpu, tokens, extra):
    print(json.dumps({"contender": contender, "seconds": seconds, "cpu_seconds": cpu, "real_tokens": tokens,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))

accuracy = contender.endswith("_acc")
contender = contender.removesuffix("_acc")
if contender in ("clm", "mlm", "vit"):
    from rich.console import Console
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.validate import validate
    from fmctl.loop.faults import Faults
    from fmctl.loop.fit import fit, seed_everything
    from fmctl.tasks import get_task
    common = [f"trainer.max_steps={steps}", "trainer.eval_every=100000", "trainer.log_every=100000",
              "trainer.progress=off", "trainer.num_threads=1", "run_dir=/tmp/unused"]
    if contender == "vit":
        args = ["recipe=vit_digits", "trainer.batch_size=64", *common]
    else:
        recipe, layers = ("gpt_clm", 6) if contender == "clm" else ("bert_mlm", 4)
        args = [f"recipe={recipe}", f"data.prepared={work / ('prepared_' + contender)}", "backbone.hidden_size=512",
                f"backbone.num_layers={layers}", "backbone.num_heads=8", f"data.max_length={max_length}",
                f"trainer.batch_size={batch}", "trainer.checkpoint_every=null", *common]
    args += sys.argv[7:]
    run = validate(preflight(parse_invocation(args)).config)
    seed_everything(0)
    task = get_task(run.task); data = task.prepare(run); model = task.build_model(run, data)
    data.validation = None
    start, cpu = time.perf_counter(), time.process_time()
    result = fit(model, task, data, run, None, Console(quiet=True), hooks=Faults.from_env())
    cpu = time.process_time() - cpu
    items = steps * run.trainer.batch_size * (1 if contender == "vit" else max_length)
    flops = task.flops_per_token(model, max_length) if hasattr(task, "flops_per_token") else None
    report(time.perf_counter() - start, cpu, items, {"precision": result.precision, "flops_per_item": flops})
elif contender == "fmctl":
    from rich.console import Console
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.validate import validate
    from fmctl.loop.faults import Faults
    from fmctl.loop.fit import fit, seed_everything
    from fmctl.tasks import get_task
    args = ["recipe=text_csv", f"data.train={train}", f"data.validation={val}", f"backbone.tokenizer={tok_dir}",
            f"backbone.hidden_size={shape['hidden_size']}", f"backbone.num_layers={shape['num_layers']}",
            f"backbone.num_heads={shape['num_heads']}", f"data.max_length={max_length}", f"trainer.batch_size={batch}",
            f"trainer.max_steps={steps}", "trainer.eval_every=100000", "trainer.log_every=100000",
            "trainer.progress=off", "trainer.num_threads=1", "run_dir=/tmp/unused", *sys.argv[7:]]
    run = validate(preflight(parse_invocation(args)).config)
    seed_everything(run.trainer.seed)
    task = get_task(run.task); data = task.prepare(run); model = task.build_model(run, data)
    counted = {"tokens": 0}
    marks = []  # (CPU s, wall s, tokens) as each batch is collated, just before its step
    collate = data.collate
    def counting(items):
        out = collate(items); counted["tokens"] += out["num_tokens"]
        marks.append((time.process_time() - cpu, time.perf_counter() - start, out["num_tokens"])); return out
    data.collate = counting
    if not accuracy:
        data.validation = None  # time training only
    start, cpu = time.perf_counter(), time.process_time()
    result = fit(model, task, data, run, None, Console(quiet=True), hooks=Faults.from_env())
    report(time.perf_counter() - start, time.process_time() - cpu, counted["tokens"],
           {"precision": result.precision, "val_accuracy": result.last_metrics.get("val/accuracy") if accuracy else None,
            "marks": marks})
else:
    from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, DataCollatorWithPadding,
                              Trainer, TrainingArguments)
    from transformers.utils import logging
    logging.set_verbosity_error()
    import csv
    tok = AutoTokenizer.from_pretrained(tok_dir)
    rows = list(csv.DictReader(open(train, encoding="utf-8")))
    names = sorted({r["label"] for r in rows})
    features = [dict(tok(r["text"], truncation=True, max_length=max_length), labels=names.index(r["label"])) for r in rows]
    seed = int(next((a.split("=", 1)[1] for a in sys.argv[7:] if a.startswith("--seed=")), 0))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=shape["hidden_size"], num_hidden_layers=shape["num_layers"],
                        num_attention_heads=shape["num_heads"], intermediate_size=4 * shape["hidden_size"],
                        num_labels=len(names), pad_token_id=tok.pad_token_id)
    model = BertForSequenceClassification(config)
    best = contender == "hf_best"
    from fmctl.loop.precision import cpu_has_bf16
    options = dict(output_dir=str(work / f"hf_{contender}"), per_device_train_batch_size=batch, max_steps=steps,
                   learning_rate=5e-4, save_strategy="no", report_to="none", disable_tqdm=True,
                   logging_strategy="no", use_cpu=True, seed=seed)
    if best:
        options.update(train_sampling_strategy="group_by_length", optim="adamw_torch_fused", bf16=cpu_has_bf16())
    if accuracy:  # the same optimisation as fmctl's defaults (6% warm-up, weight decay 0.01), so only the trainer differs
        options.update(warmup_steps=0.06, weight_decay=0.01)
    counted = {"tokens": 0}
    pad = DataCollatorWithPadding(tok)
    def collate(items):
        counted["tokens"] += sum(len(i["input_ids"]) for i in items); return pad(items)
    trainer = Trainer(model=model, args=TrainingArguments(**options), train_dataset=features, data_collator=collate)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    val_accuracy = None
    if accuracy:
        val_rows = list(csv.DictReader(open(val, encoding="utf-8")))
        val_features = [dict(tok(r["text"], truncation=True, max_length=max_length), labels=names.index(r["label"]))
                        for r in val_rows]
        predicted = trainer.predict(val_features)
        val_accuracy = float((predicted.predictions.argmax(-1) == predicted.label_ids).mean())
    report(seconds, cpu, counted["tokens"], {"precision": "bf16" if options.get("bf16") else "fp32",
                                             "val_accuracy": val_accuracy})
'''


def make_data(work: Path, n_train: int = 4000, n_val: int = 400, seed: int = 0, label_noise: float = 0.0) -> None:
    """Review-like texts whose lengths follow a long-tailed (log-normal) distribution, as
    real text does, so padding matters; the label depends on sentiment words (learnable).
    `label_noise` flips that share of labels (from its own random stream, so the texts stay
    the same), which caps accuracy near 1 - label_noise and lets two trainers differ."""
    import csv
    import math

    rng = random.Random(seed)
    flips = random.Random(seed + 1)
    positive, negative = ["great", "excellent", "loved", "superb", "reliable"], ["awful", "broken", "poor", "refund", "faulty"]
    filler = [f"w{i}" for i in range(800)]
    for name, count in (("train", n_train), ("validation", n_val)):
        with open(work / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for _ in range(count):
                label = rng.choice(["positive", "negative"])
                n = min(int(math.exp(rng.gauss(3.4, 0.7))), 200)
                words = [rng.choice(filler) for _ in range(max(n, 3))]
                for _ in range(max(1, n // 15)):
                    words.insert(rng.randrange(len(words)), rng.choice(positive if label == "positive" else negative))
                if flips.random() < label_noise:
                    label = "negative" if label == "positive" else "positive"
                writer.writerow([" ".join(words), label])
    from fmctl.data.text import read_text_rows
    from fmctl.config.schema import DataConfig
    from fmctl.data.tokenizer_training import train_tokenizer

    texts = [r.text for r in read_text_rows(work / "train.csv", DataConfig())]
    train_tokenizer(texts, "wordpiece", 8000, MAX_LENGTH).save_pretrained(work / "tokenizer")


def run(contender: str, work: Path, steps: int, extra: list[str] = (), env: dict[str, str] | None = None) -> dict:
    """One contender in a fresh process; `extra` adds fmctl overrides (to measure a change)."""
    done = subprocess.run([sys.executable, "-c", DRIVER, contender, str(work), str(steps), json.dumps(SHAPE),
                           str(BATCH), str(MAX_LENGTH), *extra], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode:
        raise SystemExit(f"{contender} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_peaks() -> dict[str, float]:
    import torch

    from fmctl.loop.flops import measure_peak_flops

    torch.set_num_threads(1)
    return {p: measure_peak_flops("cpu", p, seconds=1.0, clock="cpu") for p in ("fp32", "bf16")}


def flops_per_token(seq: float) -> float:
    """6 x non-embedding parameters + attention (12 x layers x width x sequence)."""
    h, layers = SHAPE["hidden_size"], SHAPE["num_layers"]
    body = layers * (4 * h * h + 2 * h * 4 * h) + h * h  # attention, MLP, pooler
    return 6 * body + 12 * layers * h * seq


def prepare_pretraining(work: Path) -> None:
    """Packed shards for the CLM and MLM contenders, from the fine-tuning texts."""
    corpus = work / "corpus.txt"
    if not corpus.exists():
        import csv

        rows = list(csv.DictReader(open(work / "train.csv", encoding="utf-8")))
        corpus.write_text("\n".join(r["text"] for r in rows * 4) + "\n", encoding="utf-8")
    for contender, kind in (("clm", "bpe"), ("mlm", "wordpiece")):
        if not (work / f"prepared_{contender}").exists():
            subprocess.run([sys.executable, "-m", "fmctl", "data", "prepare", f"input={corpus}",
                            f"out={work / f'prepared_{contender}'}", f"tokenizer.kind={kind}", "tokenizer.vocab_size=8000",
                            "dedup.exact=false", "dedup.near=false"],
                           check=True, capture_output=True)


def main(steps: int, rounds: int, work: Path, accuracy_steps: int) -> list[tuple[str, str]]:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tokenizer").exists():
        make_data(work)
    prepare_pretraining(work)
    results: dict[str, list[dict]] = {"fmctl": [], "hf_default": [], "hf_best": [], "clm": [], "mlm": [], "vit": []}
    for _ in range(rounds):
        for contender in results:
            results[contender].append(run(contender, work, steps))
    peaks = matmul_peaks()
    rows = [("machine limit (1 thread)", f"fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")]
    rate = {c: statistics.median(r["real_tokens"] / r["cpu_seconds"] for r in rs) for c, rs in results.items()}
    for contender in ("fmctl", "hf_default", "hf_best"):
        rs = results[contender]
        precision = rs[0]["precision"]
        mean_seq = statistics.median(r["real_tokens"] for r in rs) / (steps * BATCH)
        mfu = rate[contender] * flops_per_token(mean_seq) / peaks[precision]
        rows.append((f"fine-tune {contender}", f"{rate[contender]:,.0f} real tokens per CPU-second ({precision}), "
                     f"MFU {mfu:.1%}, peak RSS {statistics.median(r['peak_rss_mb'] for r in rs):.0f} MB"))
    rows.append(("fmctl / hf_default", f"{rate['fmctl'] / rate['hf_default']:.2f}x (target >= 3x)"))
    rows.append(("fmctl / hf_best", f"{rate['fmctl'] / rate['hf_best']:.2f}x (target >= 1.3x)"))
    for contender, what in (("clm", "pretrain GPT clm (6 x 512)"), ("mlm", "pretrain BERT mlm (4 x 512)")):
        rs = results[contender]
        mfu = rate[contender] * rs[0]["flops_per_item"] / peaks[rs[0]["precision"]]
        rows.append((what, f"{rate[contender]:,.0f} tokens per CPU-second ({rs[0]['precision']}), MFU {mfu:.1%}, "
                           f"peak RSS {statistics.median(r['peak_rss_mb'] for r in rs):.0f} MB"))
    rows.append(("ViT tiny (vit_digits, 32 px)", f"{rate['vit']:,.0f} images per CPU-second ({results['vit'][0]['precision']})"))
    if accuracy_steps:
        extra = [f"trainer.eval_every={accuracy_steps}"]
        got = {c: run(f"{c}_acc", work, accuracy_steps, extra if c == "fmctl" else [])["val_accuracy"]
               for c in ("fmctl", "hf_best")}
        rows.append((f"validation accuracy after {accuracy_steps} steps",
                     f"fmctl {got['fmctl']:.3f}, hf_best {got['hf_best']:.3f} (400 examples)"))
    return rows


def help_time() -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fmctl", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


ABLATIONS = {
    "length-grouped batches": "data.group_by_length=false",
    "[CLS]-only last block": "backbone.cls_only_last_layer=false",
    "eager attention on CPU (vs SDPA)": "backbone.attention=sdpa",
    "fused AdamW": "optim.fused=false",
    "packed dropout masks": "trainer.dropout_masks=torch",
    "bf16 autocast": "trainer.precision=fp32",
}


def ablate(steps: int, rounds: int, work: Path) -> list[tuple[str, str]]:
    """fmctl's default against the default with one choice undone, alternated per round:
    the effect of each choice, as a ratio of real tokens per CPU-second."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tokenizer").exists():
        make_data(work)
    runs: dict[str, list[dict]] = {"default": [], **{name: [] for name in ABLATIONS}}
    for _ in range(rounds):
        runs["default"].append(run("fmctl", work, steps))
        for name, override in ABLATIONS.items():
            runs[name].append(run("fmctl", work, steps, [override]))
    rate = {n: statistics.median(r["real_tokens"] / r["cpu_seconds"] for r in rs) for n, rs in runs.items()}
    return [(f"effect of {name}", f"{rate['default'] / rate[name]:.2f}x (default vs `{ABLATIONS[name]}`)")
            for name in ABLATIONS]


def against(ref: str, steps: int, rounds: int, work: Path) -> list[tuple[str, str]]:
    """fmctl's fine-tuning at commit `ref` (checked out into a throw-away worktree, driven
    by that commit's own DRIVER) against this checkout, alternated per round: a change
    that slows the loop shows as a ratio below 1, measured side by side rather than
    against figures from another day, which on a shared machine differ by 10-20%."""
    import importlib.util
    import shutil

    here = Path(__file__).resolve().parents[2]
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tokenizer").exists():
        make_data(work)
    tree = work / f"tree-{ref}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
    try:
        spec = importlib.util.spec_from_file_location("trainer_bench_at_ref", tree / "tests/bench/trainer_bench.py")
        theirs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(theirs)
        drivers = {ref: (theirs.DRIVER, tree), "this checkout": (DRIVER, here)}
        rates: dict[str, list[float]] = {name: [] for name in drivers}
        for _ in range(rounds):
            for name, (driver, root) in drivers.items():
                done = subprocess.run([sys.executable, "-c", driver, "fmctl", str(work), str(steps), json.dumps(SHAPE),
                                       str(BATCH), str(MAX_LENGTH)], capture_output=True, text=True,
                                      env={**os.environ, "PYTHONPATH": str(root)})
                if done.returncode:
                    raise SystemExit(f"fmctl at {name} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                rates[name].append(result["real_tokens"] / result["cpu_seconds"])
    finally:
        subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    pairs = [new / old for new, old in zip(rates["this checkout"], rates[ref])]
    rows = [(f"fine-tune fmctl at {name}", f"{statistics.median(r):,.0f} real tokens per CPU-second "
                                           f"(median of {rounds}; range {min(r):,.0f}-{max(r):,.0f})")
            for name, r in rates.items()]
    rows.append((f"this checkout / {ref}", f"{statistics.median(rates['this checkout']) / statistics.median(rates[ref]):.3f}x"
                                           f" (per-round ratios {min(pairs):.2f}-{max(pairs):.2f})"))
    return rows


def accuracy(steps: int, seeds: int, work: Path) -> list[tuple[str, str]]:
    """fmctl's default and hf_best trained for `steps` on data with 10% flipped labels (the
    ceiling is about 0.90), over several seeds: the speed must not cost accuracy."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tokenizer").exists():
        make_data(work, label_noise=0.1)
    got: dict[str, list[float]] = {"fmctl": [], "hf_best": []}
    for seed in range(seeds):
        got["fmctl"].append(run("fmctl_acc", work, steps, [f"trainer.eval_every={steps}", f"trainer.seed={seed}"])
                            ["val_accuracy"])
        got["hf_best"].append(run("hf_best_acc", work, steps, [f"--seed={seed}"])["val_accuracy"])
    return [(f"validation accuracy, {name}", f"{statistics.mean(v):.3f} (seeds: {', '.join(f'{a:.3f}' for a in v)})")
            for name, v in got.items()] + [("data", f"{steps} steps, batch {BATCH}, 4,000 training and 400 "
                                                    f"validation rows, 10% of labels flipped")]


def checkpointing(steps: int, rounds: int, work: Path) -> list[tuple[str, str]]:
    """GPT pretraining (6 x 512, 128-token rows, batch 32) with and without activation
    checkpointing: peak memory of the process against tokens per CPU-second."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tokenizer").exists():
        make_data(work)
    prepare_pretraining(work)
    runs: dict[str, list[dict]] = {"false": [], "true": []}
    for _ in range(rounds):
        for flag in runs:
            runs[flag].append(run("clm", work, steps, [f"trainer.gradient_checkpointing={flag}"]))
    rss = {f: statistics.median(r["peak_rss_mb"] for r in rs) for f, rs in runs.items()}
    rate = {f: statistics.median(r["real_tokens"] / r["cpu_seconds"] for r in rs) for f, rs in runs.items()}
    return [("peak RSS, GPT clm 6 x 512", f"{rss['false']:.0f} MB without, {rss['true']:.0f} MB with checkpointing"),
            ("speed with checkpointing", f"{rate['true'] / rate['false']:.2f}x of without")]


def compiled(steps: int, rounds: int, work: Path) -> list[tuple[str, str]]:
    """fmctl's default with and without `trainer.compile=true`, alternated per round. The
    steady-state rate counts the steps after the first `warm` (the compile happens in
    those), from the time each batch is collated; the compile cost is the extra wall time
    of the first steps (inductor compiles in worker processes, whose CPU time the parent
    does not see)."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tokenizer").exists():
        make_data(work)
    warm = 10
    runs: dict[str, list[dict]] = {"false": [], "true": []}
    for _ in range(rounds):
        for flag in runs:
            # a cold compile every time: inductor's on-disk cache would hide the cost after round one
            runs[flag].append(run("fmctl", work, warm + steps, [f"trainer.compile={flag}"],
                                  env={"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}))

    def steady(r: dict, column: int) -> float:
        marks = r["marks"]
        return sum(m[2] for m in marks[warm:-1]) / (marks[-1][column] - marks[warm][column])

    rate = {f: statistics.median(steady(r, 0) for r in rs) for f, rs in runs.items()}
    first = {f: statistics.median(r["marks"][warm][1] - sum(m[2] for m in r["marks"][:warm]) / steady(r, 1)
                                  for r in rs) for f, rs in runs.items()}
    wall_step = {f: statistics.median((r["marks"][-1][1] - r["marks"][warm][1]) / (len(r["marks"]) - 1 - warm)
                                      for r in rs) for f, rs in runs.items()}
    cost, saved = first["true"] - first["false"], wall_step["false"] - wall_step["true"]
    payback = f"pays back after about {cost / saved:,.0f} steps" if saved > 0 else "never pays back: it is slower per step"
    return [("steady-state real tokens per CPU-second", f"{rate['false']:,.0f} eager, {rate['true']:,.0f} compiled "
                                                        f"({rate['true'] / rate['false']:.2f}x)"),
            ("compile cost (wall time of the first steps)", f"{cost:.0f} s; {payback}"),
            ("what was compiled", f"fmctl's fine-tuning forward, dynamic shapes; {steps} steps timed after {warm}")]


def dropout_cost(repeats: int, rounds: int, work: Path) -> list[tuple[str, str]]:
    """One dropout (forward and backward, bf16, one thread) on a layer's attention
    probabilities (32 x 8 x 64 x 64) and hidden states (32 x 64 x 512): torch's CPU dropout
    against packed masks, alternated, medians of `rounds` rounds of `repeats` calls."""
    import torch
    import torch.nn.functional as F

    from fmctl.loop.dropout_masks import packed_dropout

    torch.set_num_threads(1)
    rows = []
    for name, shape in (("attention probabilities 32 x 8 x 64 x 64", (32, 8, 64, 64)),
                        ("hidden states 32 x 64 x 512", (32, 64, 512))):
        x = torch.randn(shape, dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn_like(x)
        contenders = {"torch": lambda: F.dropout(x, 0.1, True).backward(grad),
                      "packed": lambda: packed_dropout(x, 0.1).backward(grad)}
        times: dict[str, list[float]] = {c: [] for c in contenders}
        for _ in range(rounds):
            for contender, call in contenders.items():
                call()
                start = time.process_time()
                for _ in range(repeats):
                    call()
                times[contender].append((time.process_time() - start) / repeats * 1e3)
        ms = {c: statistics.median(t) for c, t in times.items()}
        rows.append((f"dropout p=0.1 on {name}", f"torch {ms['torch']:.2f} ms, packed {ms['packed']:.2f} ms "
                                                  f"({ms['torch'] / ms['packed']:.2f}x)"))
    return rows


MODES = {"--dropout": (dropout_cost, 20, 5, "trainer_dropout", "runs/bench/trainer",
                       "one thread, process CPU time, forward and backward"),
         "--compile": (compiled, 40, 2, "trainer_compile", "runs/bench/trainer",
                       "one thread per process, process CPU time (compile cost: wall time)"),
         "--checkpointing": (checkpointing, 20, 2, "trainer_checkpointing", "runs/bench/trainer",
                             "one thread per process, process CPU time"),
"--accuracy": (accuracy, 250, 3, "trainer_accuracy", "runs/bench/trainer_noisy", "one thread per process"),
         "--ablate": (ablate, 30, 3, "trainer_ablate", "runs/bench/trainer", "one thread per process, process CPU time")}


def run_mode(flag: str) -> None:
    """`--accuracy` / `--ablate` [STEPS] [ROUNDS or SEEDS] [WORK_DIR]: print, then write the section."""
    function, steps, repeats, marker, work, how = MODES[flag]
    args = [a for a in sys.argv[1:] if a != flag]
    rows = function(int(args[0]) if args else steps, int(args[1]) if len(args) > 1 else repeats,
                    Path(args[2]) if len(args) > 2 else Path(work))
    for name, value in rows:
        print(f"{name:40s} {value}")
    write_section(marker, rows, f"python tests/bench/trainer_bench.py {flag} " + " ".join(args), how)


if __name__ == "__main__" and "--against" in sys.argv:
    args = [a for a in sys.argv[1:] if a != "--against"]
    if not args:
        raise SystemExit("usage: python tests/bench/trainer_bench.py --against REF [STEPS] [ROUNDS] [WORK_DIR]")
    rows = against(args[0], int(args[1]) if len(args) > 1 else 30, int(args[2]) if len(args) > 2 else 8,
                   Path(args[3]) if len(args) > 3 else Path("runs/bench/trainer"))
    for name, value in rows:
        print(f"{name:40s} {value}")
    write_section("trainer_against", rows, "python tests/bench/trainer_bench.py --against " + " ".join(args),
                  "one thread per process, process CPU time, the two alternated per round")
elif __name__ == "__main__" and set(MODES) & set(sys.argv):
    run_mode(next(flag for flag in MODES if flag in sys.argv))
elif __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("runs/bench/trainer")
    accuracy_steps = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    rows = main(steps, rounds, work, accuracy_steps)
    rows.append(("fmctl --help wall time", f"{help_time():.2f} s (target <= 0.3 s)"))
    for name, value in rows:
        print(f"{name:32s} {value}")
    write_section("trainer_bench", rows, "python tests/bench/trainer_bench.py " + " ".join(sys.argv[1:]),
                  "one thread per process, process CPU time")
