"""Pretraining: masking statistics, packed blocks, MLM/CLM runs whose model/ loads in
transformers alone, and the hand-off to fine-tuning."""
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from fmctl.config.compose import schema_from_overrides
from fmctl.config.prepare_schema import PrepareConfig
from fmctl.data.packed import MaskedBlocks, PackedBlocks
from fmctl.data.prepare import load_prepared, prepare_corpus
from fmctl.errors import ConfigError
from tests.helpers import TINY_TEXT, finetune, read_jsonl

QUIET = Console(quiet=True)


def structured_corpus(path, n=1500, seed=0):
    """Sentences whose words come from one of four topics: a masked word is predictable
    from its neighbours, so a tiny model's loss falls within a few dozen steps."""
    rng = random.Random(seed)
    topics = [["goal", "match", "coach", "league", "striker", "season"], ["chip", "server", "cloud", "code", "laptop", "network"],
              ["oven", "sauce", "flour", "recipe", "butter", "dough"], ["flight", "hotel", "beach", "visa", "ferry", "island"]]
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(n):
            words = rng.choice(topics)
            handle.write(" ".join(rng.choice(words) for _ in range(rng.randint(8, 16))) + "\n")
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    corpus = structured_corpus(root / "corpus.txt")
    out = {}
    for kind in ("wordpiece", "bpe"):
        # Byte-level BPE starts from 256 byte tokens: 400 leaves room to merge whole words.
        vocab = 200 if kind == "wordpiece" else 400
        cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={root / kind}", f"tokenizer.kind={kind}",
                                                    f"tokenizer.vocab_size={vocab}", "dedup.near=false",
                                                    "validation_fraction=0.05"])
        out[kind] = prepare_corpus(cfg, QUIET).out
    return out


def test_mlm_masking_follows_bert_recipe(prepared):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(prepared["wordpiece"] / "tokenizer")
    _, shards = load_prepared(prepared["wordpiece"])
    blocks = PackedBlocks(shards["train"], 62)
    data = MaskedBlocks(blocks, tokenizer, mask_prob=0.15, whole_word=False, seed=3)
    chosen = masked = kept = 0
    special = set(tokenizer.all_special_ids)
    for i in range(min(len(data), 300)):
        item = data[i]
        ids, labels = item["input_ids"].numpy(), item["labels"].numpy()
        original = np.concatenate([[tokenizer.cls_token_id], blocks.tokens(i), [tokenizer.sep_token_id]])
        picked = labels != -100
        assert not any(original[picked][k] in special for k in range(picked.sum()))  # specials never predicted
        assert (labels[picked] == original[picked]).all() and (ids[~picked] == original[~picked]).all()
        chosen += picked.sum()
        masked += (ids[picked] == tokenizer.mask_token_id).sum()
        kept += (ids[picked] == original[picked]).sum()
    rate = chosen / (300 * (62 + 2))
    assert 0.12 < rate < 0.17
    assert 0.75 < masked / chosen < 0.85 and 0.06 < kept / chosen < 0.16
    assert data[5]["labels"].equal(data[5]["labels"])  # the same example, the same mask
    data.set_epoch(1)
    assert not data[5]["labels"].equal(MaskedBlocks(blocks, tokenizer, 0.15, False, seed=3)[5]["labels"])


def test_whole_word_masking_masks_every_piece(prepared, tmp_path):
    from fmctl.data.tokenizer_training import train_tokenizer

    tokenizer = train_tokenizer(["unbelievably longwinded words"] * 3 + ["short ones"] * 50, "wordpiece", 20, 64)
    ids = tokenizer("unbelievably longwinded", add_special_tokens=False)["input_ids"]
    assert any(t.startswith("##") for t in tokenizer.convert_ids_to_tokens(ids))

    class Shard:
        tokens = np.asarray(ids * 40)

    data = MaskedBlocks(PackedBlocks([Shard()], len(ids) * 40), tokenizer, 0.3, whole_word=True, seed=0)
    item = data[0]
    pieces = tokenizer.convert_ids_to_tokens(np.concatenate([[tokenizer.cls_token_id], Shard.tokens,
                                                             [tokenizer.sep_token_id]]).tolist())
    picked = (item["labels"] != -100).numpy()
    for i, piece in enumerate(pieces):
        if piece.startswith("##"):
            assert picked[i] == picked[i - 1], "a word was only partly masked"


def pretrain(recipe, corpus, run_dir, *extra):
    from fmctl import pipeline
    from tests.helpers import compose

    raw, run = compose(recipe, [f"data.prepared={corpus}", "backbone.hidden_size=64", "backbone.num_layers=2",
                                "backbone.num_heads=2", "data.max_length=32", "trainer.batch_size=16",
                                "trainer.max_steps=40", "trainer.eval_every=20", "trainer.log_every=5",
                                "trainer.progress=off", "trainer.precision=fp32", "optim.lr=3e-3", *extra], run_dir)
    return pipeline.pretrain(run, raw, console=QUIET)


LOAD_SCRIPT = r'''
import sys
sys.modules["fmctl"] = None
from transformers import AutoModelForMaskedLM, AutoModelForCausalLM, AutoTokenizer
auto = {"mlm": AutoModelForMaskedLM, "clm": AutoModelForCausalLM}[sys.argv[2]]
model = auto.from_pretrained(sys.argv[1]); tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(type(model).__name__, len(tokenizer))
'''


@pytest.mark.parametrize("recipe, kind, task", [("bert_mlm", "wordpiece", "mlm"), ("gpt_clm", "bpe", "clm")])
def test_pretraining_learns_and_model_loads_without_fmctl(prepared, tmp_path, recipe, kind, task):
    result = pretrain(recipe, prepared[kind], tmp_path / "run")
    train = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert train[-1]["loss"] < 0.75 * train[0]["loss"], [r["loss"] for r in train]
    assert all(0 < r["mfu"] < 1 for r in train)
    assert result.metrics["val/perplexity"] < 30  # the corpus has ~30 word types; chance is far worse
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(result.run_dir / "model"), task],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == {"mlm": "BertForMaskedLM", "clm": "GPT2LMHeadModel"}[task]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["verb"] == "pretrain" and manifest["data"]["prepared"]["fingerprint"]


def test_finetune_starts_from_the_pretrain_run_and_records_lineage(prepared, reviews, tmp_path):
    base = pretrain("bert_mlm", prepared["wordpiece"], tmp_path / "pre", "trainer.max_steps=5")
    result = finetune("text_csv", [f"data.train={reviews['train']}", "data.text_column=Review Text",
                                   "data.label_column=sentiment", *TINY_TEXT, "trainer.max_steps=3",
                                   f"backbone.pretrained={base.run_dir}"], tmp_path / "fine")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["lineage"][0]["verb"] == "pretrain" and manifest["lineage"][0]["run_dir"] == str(base.run_dir)
    from safetensors.torch import load_file

    pre = load_file(str(base.run_dir / "model" / "model.safetensors"))
    fine = load_file(str(result.run_dir / "model" / "model.safetensors"))
    assert pre["bert.embeddings.word_embeddings.weight"].shape == fine["bert.embeddings.word_embeddings.weight"].shape


@pytest.mark.parametrize("args, message", [
    (["recipe=bert_mlm", "backbone=gpt"], "task 'mlm' needs backbone bert, got 'gpt'"),
    (["recipe=gpt_clm", "backbone=bert"], "valid pairs: text_classification+bert/gpt"),
    (["recipe=bert_mlm"], "data.prepared: required for pretraining on text; make one with fmctl data prepare"),
])
def test_pretraining_config_errors(args, message):
    from fmctl.config.compose import parse_invocation, preflight

    with pytest.raises(ConfigError) as info:
        preflight(parse_invocation(args))
    assert any(message in p for p in info.value.problems), info.value.problems


def test_verbs_refuse_each_others_tasks(prepared, reviews, tmp_path):
    with pytest.raises(ConfigError, match="is a pretraining objective; run it with fmctl pretrain"):
        from fmctl import pipeline
        from tests.helpers import compose

        raw, run = compose("bert_mlm", [f"data.prepared={prepared['wordpiece']}"], tmp_path / "x")
        pipeline.finetune(run, raw, console=QUIET)
    with pytest.raises(ConfigError, match="is not a pretraining objective"):
        raw, run = compose("text_csv", [f"data.train={reviews['train']}"], tmp_path / "y")
        pipeline.pretrain(run, raw, console=QUIET)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def write_mixed_images(root, count=96, seed=0):
    """Unlabelled photos of mixed sizes and modes, no class folders: smooth gradients with
    a bright square, so masked patches are predictable from their neighbours."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = rng.choice([16, 24, 40]), rng.choice([16, 32, 48])
        y, x = np.mgrid[0:h, 0:w]
        base = (x * 255 / max(w - 1, 1)).astype("uint8")
        pixels = np.stack([base, base[::-1], np.full_like(base, 90)], axis=-1)
        top, left = rng.randint(0, h // 2), rng.randint(0, w // 2)
        pixels[top:top + h // 3, left:left + w // 3] = 240
        image = Image.fromarray(pixels)
        (image.convert("L") if i % 5 == 0 else image).save(root / f"photo_{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


def test_mim_learns_on_mixed_size_images_and_feeds_finetuning(shapes, tmp_path):
    from fmctl import pipeline
    from tests.helpers import TINY_VIT, compose

    images = write_mixed_images(tmp_path / "unlabelled")
    raw, run = compose("vit_mim", [f"data.train={images}", *TINY_VIT, "trainer.max_steps=40", "trainer.batch_size=16",
                                   "trainer.eval_every=20", "trainer.log_every=5", "optim.lr=2e-3"], tmp_path / "mim")
    result = pipeline.pretrain(run, raw, console=QUIET)
    train = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if r["event"] == "train"]
    # Random crops and flips keep the task hard; a quarter off the untrained loss in 40 steps.
    assert train[-1]["loss"] < 0.8 * train[0]["loss"], [r["loss"] for r in train]
    import timm
    from safetensors.torch import load_file

    encoder = timm.create_model(f"local-dir:{result.run_dir / 'model'}", pretrained=True)  # timm alone
    assert encoder.num_classes == 0
    tuned = finetune("image_folder", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=2", "optim.lr=1e-9",
                                      "sched=constant", f"backbone.pretrained={result.run_dir}"], tmp_path / "fine")
    after = load_file(str(tuned.run_dir / "model" / "model.safetensors"))
    assert np.allclose(after["blocks.1.mlp.fc1.weight"].numpy(), encoder.state_dict()["blocks.1.mlp.fc1.weight"].numpy(),
                       atol=1e-6)


def test_gpt_run_generates_text_from_a_prompt(prepared, tmp_path):
    from fmctl.predict.generate import GenerationSettings, generate

    result = pretrain("gpt_clm", prepared["bpe"], tmp_path / "gpt", "trainer.max_steps=80")
    sport = {"goal", "match", "coach", "league", "striker", "season"}
    greedy = generate(result.run_dir, ["goal match coach"], GenerationSettings(max_new_tokens=12))[0]["generated"]
    assert set(greedy.split()) & sport, greedy  # continues the topic it was given
    sample = GenerationSettings(max_new_tokens=12, strategy="sample", top_k=10, top_p=0.9, temperature=0.8, seed=1)
    first = generate(result.run_dir, ["oven sauce"], sample)[0]["generated"]
    assert generate(result.run_dir, ["oven sauce"], sample)[0]["generated"] == first  # seeded
    assert generate(result.run_dir, ["goal", "oven sauce"], sample)[1]["generated"] == first  # per prompt
    other = GenerationSettings(**{**sample.__dict__, "seed": 2, "num_return_sequences": 3})
    assert len(generate(result.run_dir, ["oven sauce"], other)[0]["generated"]) == 3

    # its ONNX export generates the same greedy text (decoded in numpy around onnxruntime)
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from fmctl.predict.run import predict

    exported = export_run(result.run_dir, ExportOptions(fmt="onnx"), out=tmp_path / "onnx", log=lambda _: None)
    assert exported.manifest["parity"]["passed"] and exported.manifest["parity"]["label_agreement"] >= 0.99
    cache = exported.manifest["kv_cache"]  # decoding feeds one token a step through decoder_with_past.onnx
    assert cache["written"] and (exported.folder / cache["file"]).is_file()
    assert cache["parity"]["max_abs_diff"] <= 1e-4 and cache["parity"]["next_token_agreement"] == 1.0
    from fmctl.predict.generate import OnnxGenerator

    assert OnnxGenerator(exported.folder).cached is not None
    prompts = ["goal match coach", "oven sauce flour", ""]
    assert generate(exported.folder, prompts, GenerationSettings(max_new_tokens=12)) == \
        generate(result.run_dir, prompts, GenerationSettings(max_new_tokens=12))
    sampled = generate(exported.folder, ["oven sauce"], sample)[0]["generated"]
    assert sampled == generate(exported.folder, ["oven sauce"], sample)[0]["generated"]  # seeded
    assert sampled == generate(exported.folder, ["chip", "oven sauce"], sample)[1]["generated"]
    assert set(sampled.split()) <= {"oven", "sauce", "flour", "recipe", "butter", "dough", "goal", "match", "coach",
                                    "league", "striker", "season", "chip", "server", "cloud", "code", "laptop",
                                    "network", "flight", "hotel", "beach", "visa", "ferry", "island"}, sampled
    several = generate(exported.folder, ["oven sauce"], other)[0]["generated"]
    assert len(several) == 3 and len(set(several)) > 1
    (tmp_path / "prompts.csv").write_text("text\ngoal match coach\noven sauce flour\n", encoding="utf-8")
    predict(exported.folder, input_file=tmp_path / "prompts.csv", out=tmp_path / "out.jsonl", log=lambda _: None)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["prompt"] for r in rows] == prompts[:2] and all(r["generated"].strip() for r in rows)


def test_generation_stays_within_the_position_table(prepared, tmp_path):
    """GPT-2's learned positions end at n_positions: a prompt that fills them is a row
    error and generation stops when they run out, on the run and its ONNX export alike,
    instead of an index error that loses every row."""
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from fmctl.predict.generate import GenerationSettings, generate
    from fmctl.predict.run import predict

    result = pretrain("gpt_clm", prepared["bpe"], tmp_path / "gpt", "backbone.max_positions=32", "trainer.max_steps=5")
    exported = export_run(result.run_dir, ExportOptions(fmt="onnx"), out=tmp_path / "onnx", log=lambda _: None)
    assert exported.manifest["postprocessing"]["max_positions"] == 32
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(result.run_dir / "model"))
    words = "goal match coach league striker season".split() * 10
    near_full = next(" ".join(words[:n]) for n in range(1, 60)
                     if len(tokenizer(" ".join(words[:n]), add_special_tokens=False)["input_ids"]) >= 29)
    long_prompt = " ".join(words[:40])  # over 32 tokens
    wanted = GenerationSettings(max_new_tokens=100, strategy="sample", seed=3)
    for target in (result.run_dir, exported.folder):
        short, too_long = generate(target, [near_full, long_prompt], wanted)
        assert short["stopped_at_max_positions"] and short["generated"].strip(), short
        assert too_long["error"].startswith("the prompt is ") and "at most 32 positions" in too_long["error"]
        within = generate(target, ["goal match"], GenerationSettings(max_new_tokens=5))[0]
        assert "stopped_at_max_positions" not in within
        (tmp_path / "prompts.csv").write_text(f"text\n{long_prompt}\ngoal match\n", encoding="utf-8")
        summary = predict(target, input_file=tmp_path / "prompts.csv", out=tmp_path / "out.jsonl", log=lambda _: None)
        assert summary.predicted == 1 and len(summary.errors) == 1 and "prompts.csv:2: the prompt is" in summary.errors[0]
        predict(target, input_file=tmp_path / "prompts.csv", out=tmp_path / "few.jsonl", log=lambda _: None,
                generation=GenerationSettings(max_new_tokens=2))  # --max-new-tokens reaches --input rows too
        assert [r.get("generated") for r in read_jsonl(tmp_path / "few.jsonl")] == \
            [None, generate(target, ["goal match"], GenerationSettings(max_new_tokens=2))[0]["generated"]]
    from tests.test_bad_inputs import call_main

    code, _, err = call_main(["predict", str(result.run_dir), "--prompt", "goal", "--text", "match"])
    assert code == 2 and "predict: --prompt generates from its own text; give --prompt or --text, not both" in err
    code, out, err = call_main(["predict", str(result.run_dir), "--prompt", long_prompt, "--prompt", "goal"])
    assert code == 0 and "row error: --prompt" in err and len(out.strip().splitlines()) == 2


def test_prompt_on_a_classifier_is_refused(tmp_path):
    from fmctl.errors import RunFolderError
    from fmctl.predict.generate import model_folder

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    with pytest.raises(RunFolderError, match="not a causal language model"):
        model_folder(tmp_path)


def test_document_ids_and_positions_restart_after_each_separator():
    import torch

    from fmctl.models.document_mask import document_ids, positions

    ids = torch.tensor([[5, 6, 2, 7, 8, 9, 2, 4], [2, 3, 3, 3, 2, 2, 5, 5]])
    docs = document_ids(ids, separator_id=2)
    assert docs.tolist() == [[0, 0, 0, 1, 1, 1, 1, 2], [0, 1, 1, 1, 1, 2, 3, 3]]
    assert positions(docs).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0], [0, 0, 1, 2, 3, 0, 0, 1]]


@pytest.mark.parametrize("family", ["gpt", "bert"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_document_mask_keeps_packed_documents_apart(family, attention):
    """Changing one document of a packed row moves the other's outputs only without the mask."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from fmctl.data.packed import DocumentCollate, stack_blocks
    from fmctl.tasks.language_modeling import CausalLM, CLMTaskConfig, MaskedLM, MLMTaskConfig

    torch.manual_seed(0)
    if family == "gpt":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                           attn_implementation=attention)).eval()
        task = CausalLM(CLMTaskConfig())
    else:
        model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, attn_implementation=attention)).eval()
        task = MaskedLM(MLMTaskConfig())
    sep = 2
    first, second = [11, 12, 13, 14, sep], [21, 22, 23, 24, 25, 26]
    row = torch.tensor(first + second)
    edited = row.clone()
    edited[:4] = torch.tensor([31, 32, 33, 34])  # another first document, same length
    labels = torch.full_like(row, -100)
    labels[5:] = row[5:]                          # score the second document's positions (MLM)

    def second_document_outputs(collate, ids):
        batch = collate([{"input_ids": ids, "labels": labels}])
        with torch.no_grad():
            logits, _ = task.forward(model, batch)
        return logits.reshape(-1, 50)[-5:] if family == "gpt" else logits

    masked = DocumentCollate(sep)
    assert torch.allclose(second_document_outputs(masked, row), second_document_outputs(masked, edited), atol=1e-5)
    assert not torch.allclose(second_document_outputs(stack_blocks, row), second_document_outputs(stack_blocks, edited),
                              atol=1e-3)
    # a document alone in its row gives the same outputs as behind another one, positions included
    alone = torch.tensor(second)
    labels_alone = torch.tensor(second)
    batch = masked([{"input_ids": alone, "labels": labels_alone}])
    with torch.no_grad():
        logits_alone, _ = task.forward(model, batch)
    expected = logits_alone.reshape(-1, 50)[-5:] if family == "gpt" else logits_alone
    assert torch.allclose(second_document_outputs(masked, row), expected, atol=1e-5)


def test_document_masked_pretraining_learns(prepared, tmp_path):
    result = pretrain("gpt_clm", prepared["bpe"], tmp_path / "run", "data.document_mask=true")
    train = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert train[-1]["loss"] < 0.75 * train[0]["loss"], [r["loss"] for r in train]
    assert result.metrics["val/perplexity"] < 30


def test_pretraining_without_validation_says_so(tmp_path):
    import io

    from fmctl import pipeline
    from tests.helpers import compose

    corpus = structured_corpus(tmp_path / "corpus.txt", n=300)
    cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={tmp_path / 'p'}", "tokenizer.vocab_size=200",
                                                "dedup.near=false", "validation_fraction=0"])
    prepare_corpus(cfg, QUIET)
    raw, run = compose("bert_mlm", [f"data.prepared={tmp_path / 'p'}", "backbone.hidden_size=32", "backbone.num_layers=1",
                                    "backbone.num_heads=2", "data.max_length=32", "trainer.max_steps=2",
                                    "trainer.progress=off"], tmp_path / "run")
    printed = io.StringIO()
    pipeline.pretrain(run, raw, console=Console(file=printed, width=200))
    assert "warning: no validation examples, so no evaluation" in printed.getvalue()
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    exported = export_run(tmp_path / "run", ExportOptions(fmt="hf"), out=tmp_path / "hf", log=lambda _: None)
    assert exported.manifest["parity"]["passed"] and exported.manifest["parity"]["split"] == "train"


def test_continued_pretraining_of_a_gpt2_without_pad_token_exports(tmp_path):
    """Real GPT-2 tokenizers have no pad token: continued pretraining, then ONNX export."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from fmctl import pipeline
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from tests.helpers import compose

    corpus = structured_corpus(tmp_path / "corpus.txt", n=400)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train([str(corpus)], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = GPT2TokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    assert tokenizer.pad_token is None
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                               eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
                    ).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={tmp_path / 'p'}", f"tokenizer.path={tmp_path / 'gpt2'}",
                                                "dedup.near=false", "validation_fraction=0.1"])
    prepare_corpus(cfg, QUIET)
    raw, run = compose("gpt_clm", [f"data.prepared={tmp_path / 'p'}", f"backbone.pretrained={tmp_path / 'gpt2'}",
                                   "data.max_length=32", "trainer.max_steps=2", "trainer.progress=off"], tmp_path / "run")
    pipeline.pretrain(run, raw, console=QUIET)
    exported = export_run(tmp_path / "run", ExportOptions(fmt="onnx"), out=tmp_path / "onnx", log=lambda _: None)
    assert exported.manifest["parity"]["passed"]
    assert exported.manifest["preprocessing"]["pad_token_id"] == tokenizer.eos_token_id
