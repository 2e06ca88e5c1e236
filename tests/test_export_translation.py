"""Translation runs export to ONNX: T5 and encoder_decoder (EncoderDecoderModel: a BERT
encoder with a BERT decoder sharing its tokenizer, or with a GPT decoder writing a
tokenizer of its own) as encoder.onnx + decoder_with_past.onnx, GPT as
decoder_with_past.onnx, each key/value-cached; kept only when greedy translations
through them are PyTorch's on every validation source; int8 offered with BLEU before and
after; `fmctl predict EXPORT --input sources.txt` translates with onnxruntime, without
torch, the same text the run folder gives. Real messages: English -> German pairs from
the machine's gettext catalogs (tests/gettext_data.py), tiny models trained briefly."""
import subprocess
import sys

import pytest

from fmctl.export.run import export_run
from fmctl.export.writers import ExportOptions
from fmctl.predict.run import predict
from tests.gettext_data import write_translation_tsv
from tests.helpers import finetune, read_jsonl
from tests.task_data import TINY

FP32_ATOL = 1e-4
COMMON = ["data.max_length=32", "data.max_target_length=32", "task.generation.max_new_tokens=16",
          "trainer.batch_size=32", "optim.lr=3e-3", "trainer.max_steps=150", "trainer.eval_every=1000",
          "trainer.log_every=1000"]


def quiet(_line):
    pass


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_translation_tsv(tmp_path_factory.mktemp("gettext"), "de", train=1200, validation=60)


def halves(decoder: str = "bert") -> list[str]:
    """A random tiny encoder_decoder: the two halves' shapes, nothing pretrained."""
    return ["backbone.encoder.pretrained=null", "backbone.decoder.pretrained=null", f"backbone.decoder.name={decoder}",
            "backbone.vocab_size=600", "task.generation.num_beams=1", "trainer.progress=off",
            "trainer.precision=fp32", "trainer.num_threads=1",
            *[f"backbone.{half}.{key}={value}" for half in ("encoder", "decoder")
              for key, value in (("hidden_size", 64), ("num_layers", 2), ("num_heads", 2), ("dropout", 0))]]


@pytest.fixture(scope="module")
def runs(pairs, tmp_path_factory):
    from fmctl.data.tokenizer_training import train_tokenizer

    root = tmp_path_factory.mktemp("translation")
    data = [f"data.train={pairs['train']}", f"data.validation={pairs['validation']}"]
    targets = [line.split("\t")[1] for line in pairs["train"].read_text(encoding="utf-8").splitlines()[1:]]
    train_tokenizer(targets, "bpe", 800, 32).save_pretrained(root / "german_bpe")  # the GPT decoder's own, cased
    return {"gpt": finetune("translation_gpt", [*data, *TINY, *COMMON], root / "gpt").run_dir,
            "t5": finetune("translation_t5", [*data, *TINY, "backbone.num_heads=4", *COMMON], root / "t5").run_dir,
            "ed_bert": finetune("translation_minilm", [*data, *halves("bert"), *COMMON], root / "ed_bert").run_dir,
            "ed_gpt": finetune("translation_minilm", [*data, *halves("gpt"), f"backbone.target_tokenizer={root / 'german_bpe'}",
                                                      *COMMON], root / "ed_gpt").run_dir}


@pytest.fixture(scope="module")
def exports(runs):
    return {name: export_run(run_dir, ExportOptions(fmt="onnx"), log=quiet) for name, run_dir in runs.items()}


@pytest.fixture(scope="module")
def sources(pairs, tmp_path_factory):
    """Validation sources as a .txt file, one a line, as a user would give them."""
    rows = [line.split("\t")[0] for line in pairs["validation"].read_text(encoding="utf-8").splitlines()[1:]]
    path = tmp_path_factory.mktemp("sources") / "sources.txt"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name, files", [("gpt", ["decoder_with_past.onnx"]),
                                         ("t5", ["encoder.onnx", "decoder_with_past.onnx"]),
                                         ("ed_bert", ["encoder.onnx", "decoder_with_past.onnx"]),
                                         ("ed_gpt", ["encoder.onnx", "decoder_with_past.onnx"])])
def test_onnx_translations_are_pytorchs(name, files, exports):
    manifest = exports[name].manifest
    assert sorted(manifest["files"].values()) == sorted(files)
    assert all((exports[name].folder / f).is_file() for f in files)
    assert manifest["parity"]["max_abs_diff"] <= FP32_ATOL and manifest["parity"]["label_agreement"] == 1.0
    identity = manifest["translation_parity"]
    assert identity["examples"] == 60 and identity["identical"] == 60 and identity["strategy"] == "greedy"
    scores = manifest["evaluation"]["scores"]
    assert manifest["evaluation"]["metric"] == "bleu" and scores["onnx_fp32"] == scores["pytorch_fp32"]
    decoding = manifest["decoding"]
    assert decoding["decoder_only"] is (name == "gpt") and decoding["max_new_tokens"] == 16
    assert (decoding["separator_id"] is not None) is (name == "gpt")
    graph = manifest["graphs"]["decoder"]
    assert graph["inputs"][0]["shape"] == ["batch", "sequence"]
    past = next(i for i in graph["inputs"] if i["name"] == "past_key_0")
    assert past["shape"][0] == "batch" and isinstance(past["shape"][2], str)     # dynamic cache length
    # what `fmctl export` prints: the export's checks, though `graphs` lists graph inputs here
    import io

    from rich.console import Console

    from fmctl.report import export_table

    screen = Console(file=io.StringIO(), width=200)
    screen.print(export_table(manifest))
    printed = [" ".join(line.strip("│ ").split()) for line in screen.file.getvalue().splitlines()]
    assert "onnxruntime fp32: greedy translations = PyTorch's │ 60 of 60" in printed
    assert f"val bleu onnx_fp32 │ {scores['onnx_fp32']:.4f}" in printed


@pytest.mark.parametrize("name", ["gpt", "t5", "ed_bert", "ed_gpt"])
def test_predict_on_the_export_gives_the_run_folders_translations(name, runs, exports, sources, tmp_path):
    from_run = predict(runs[name], input_file=sources, out=tmp_path / "run.jsonl", log=quiet)
    from_onnx = predict(exports[name].folder, input_file=sources, out=tmp_path / "onnx.jsonl", log=quiet)
    assert from_run.predicted == from_onnx.predicted == 60 and not from_onnx.errors
    run_rows, onnx_rows = read_jsonl(tmp_path / "run.jsonl"), read_jsonl(tmp_path / "onnx.jsonl")
    assert run_rows == onnx_rows
    assert len({r["translation"] for r in onnx_rows}) > 10      # varied output: agreeing means something


@pytest.mark.parametrize("name", ["gpt", "t5", "ed_bert", "ed_gpt"])
def test_light_source_encoding_is_the_tasks(name, runs, exports, sources):
    """The torch-free encoder (tokenizers) reads sources and writes text as the task does."""
    from fmctl.config.saved_runs import load_run_config
    from fmctl.predict.translate import SourceEncoder
    from fmctl.tasks import get_task

    _, run = load_run_config(runs[name], [])
    task = get_task(run.task)
    task.prepare(run, model_dir=runs[name] / "model", splits=("validation",))
    manifest = exports[name].manifest
    light = SourceEncoder(exports[name].folder, manifest["preprocessing"]["tokenizer_file"], manifest["decoding"],
                          manifest["postprocessing"], manifest["preprocessing"]["max_length"])
    texts = sources.read_text(encoding="utf-8").splitlines() + ["x " * 80]        # and one cut to max_length
    prompts = task.source_ids(texts, run.data.max_length)
    assert light.prompts(texts) == prompts
    targets = task.target_tokenizer([r for r in texts], add_special_tokens=False)["input_ids"]
    assert light.texts(targets) == task.texts(targets)
    if name == "ed_gpt":  # the decoder's own tokenizer travels with the export and decodes its output
        assert manifest["decoding"]["target_tokenizer_file"] == "target_tokenizer/tokenizer.json"
        assert task.target_tokenizer is not task.tokenizer and len(task.target_tokenizer) != len(task.tokenizer)


def test_translating_with_the_onnx_export_never_imports_torch(exports, sources, tmp_path):
    script = ("import sys; from fmctl.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "heavy = [m for m in ('torch', 'transformers', 'timm') if m in sys.modules]\n"
              "print('heavy:', heavy); sys.exit(3 if heavy else 0)")
    out = tmp_path / "translations.csv"
    done = subprocess.run([sys.executable, "-c", script, "predict", str(exports["t5"].folder), "--input",
                           str(sources), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "heavy: []" in done.stdout
    assert "onnxruntime, greedy" in done.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 61


def test_int8_translation_reports_bleu_before_and_after(runs, exports, pairs, sources, tmp_path):
    from sacrebleu.metrics import BLEU

    result = export_run(runs["t5"], ExportOptions(fmt="onnx", quantize="int8"), out=tmp_path / "int8", log=quiet)
    manifest = result.manifest
    q = manifest["quantization"]
    assert q["attempts"][-1]["passed"] and q["attempts"][-1]["metric"] == "bleu"
    assert q["size_bytes"] < 0.75 * q["fp32_size_bytes"]
    assert manifest["translation_parity"]["identical"] == 60             # fp32 graphs checked first
    scores = manifest["evaluation"]["scores"]
    assert set(scores) == {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
    assert scores["onnx_int8"] >= scores["onnx_fp32"] - max(1.0, q["attempts"][-1]["allowed_drop_points"])
    assert set(manifest["latency"]["results"]) == {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
    # the int8 BLEU is that of what `fmctl predict` on the int8 export writes
    predicted = predict(result.folder, input_file=sources, out=tmp_path / "int8.jsonl", log=quiet)
    assert predicted.predicted == 60
    hypotheses = [r["translation"] for r in read_jsonl(tmp_path / "int8.jsonl")]
    references = [line.split("\t")[1] for line in pairs["validation"].read_text(encoding="utf-8").splitlines()[1:]]
    assert round(BLEU().corpus_score(hypotheses, [references]).score, 4) == scores["onnx_int8"]
    # and the translations int8 leaves unchanged are counted against PyTorch's (= the fp32 export's)
    predict(exports["t5"].folder, input_file=sources, out=tmp_path / "fp32.jsonl", log=quiet)
    fp32 = [r["translation"] for r in read_jsonl(tmp_path / "fp32.jsonl")]
    unchanged = sum(a == b for a, b in zip(hypotheses, fp32))
    assert manifest["translation_parity_int8"]["identical"] >= unchanged > 0


def test_a_t5_with_heads_removed_and_lora_trains_exports_and_reloads(runs, pairs, sources, tmp_path):
    """`fmctl customize` on a translation run: prune removes half of T5's heads (its config
    records heads apart from their width), LoRA adapts the smaller model, and model/ is a
    T5 with 2 heads that transformers loads alone, exported with the same greedy parity."""
    import json

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from tests.helpers import customize

    result = customize(runs["t5"], ["customize=[prune,lora]", "customize.prune.heads=0.5", "customize.prune.sparsity=0",
                                    "trainer.max_steps=40", "report.repeats=1"], tmp_path / "pruned")
    report = result.report
    (prune_op, _) = report["customizations"]
    assert prune_op["heads"] == "4 -> 2" and prune_op["heads_removed"] == 2 * (2 + 2 + 2)
    base, custom = report["base"], report["customized"]
    assert custom["params_total"] < base["params_total"] and custom["flops_batch_32"] < base["flops_batch_32"]
    assert custom["size_bytes"] < base["size_bytes"]
    assert custom["val/loss"] < 2 * base["val/loss"]  # 40 steps of LoRA recover from losing half the heads
    folder = result.run_dir / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["num_heads"] == 2 and config["d_kv"] == 16
    model, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert sum(p.numel() for p in model.parameters()) == custom["params_total"]
    exported = export_run(result.run_dir, ExportOptions(fmt="onnx"), out=tmp_path / "onnx", log=quiet)
    assert exported.manifest["translation_parity"]["identical"] == 60
    predicted = predict(exported.folder, input_file=sources, out=tmp_path / "onnx.jsonl", log=quiet)
    assert predicted.predicted == 60
    tokenizer = AutoTokenizer.from_pretrained(folder)  # transformers alone translates as the export does
    rows = read_jsonl(tmp_path / "onnx.jsonl")[:8]
    batch = tokenizer([r["source"] for r in rows], return_tensors="pt", padding=True)
    generated = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=16)
    assert tokenizer.batch_decode(generated, skip_special_tokens=True) == [r["translation"] for r in rows]
