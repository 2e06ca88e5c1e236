"""The CLI must start fast: importing it may not pull in the heavy ML stack."""
import subprocess
import sys

HEAVY = ("torch", "transformers", "timm", "hydra", "omegaconf", "tokenizers", "sklearn", "numpy")


def test_cli_import_does_not_load_heavy_libraries():
    code = ("import sys, fmctl.cli; heavy = [m for m in %r if m in sys.modules]; print(heavy); "
            "sys.exit(1 if heavy else 0)") % (HEAVY,)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"imported at CLI start-up: {done.stdout}"


def test_help_lists_verbs_and_examples():
    done = subprocess.run([sys.executable, "-m", "fmctl", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for verb in ("finetune", "eval"):
        assert verb in done.stdout
    assert done.stdout.count("fmctl finetune") + done.stdout.count("fmctl eval") >= 3


def test_recipes_lists_shipped_recipes():
    done = subprocess.run([sys.executable, "-m", "fmctl", "recipes"], capture_output=True, text=True)
    assert done.returncode == 0
    assert {"bert_topics", "gpt_topics", "vit_digits", "minilm_topics"} <= set(done.stdout.split())
    # each recipe says what runs it and what it is for
    row = next(line for line in done.stdout.splitlines() if line.startswith("bert_mlm "))
    assert all(word in row.split() for word in ("pretrain", "mlm", "bert")) and "pretraining of a BERT" in row
