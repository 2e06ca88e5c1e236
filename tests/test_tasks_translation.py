"""Translation with a GPT and with a T5 on a deterministic word-substitution language:
BLEU above 30 after training (copying the source scores 0), greedy and beam search,
batched generation equal to one-at-a-time, and model/ that generates the same text
through transformers' AutoModelForCausalLM / AutoModelForSeq2SeqLM."""
import json
import os

import pytest
from rich.console import Console

from fmctl import pipeline
from fmctl.config.saved_runs import load_run_config
from fmctl.tasks.seq2seq import translation_scores
from tests.helpers import finetune, read_jsonl
from tests.task_data import TINY, write_parallel_tsv

COMMON = ["data.max_length=32", "data.max_target_length=32", "task.generation.max_new_tokens=20",
          "trainer.batch_size=32", "optim.lr=3e-3", "trainer.log_every=25", "data.max_eval_examples=60"]


def evaluate(run_dir, overrides=()):
    raw, run = load_run_config(run_dir, list(overrides))
    return pipeline.evaluate_run(run_dir, run, raw, console=Console(file=open(os.devnull, "w")))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    return {"train": write_parallel_tsv(root / "train.tsv", 1500, seed=1),
            "headerless": write_parallel_tsv(root / "train.txt", 1500, seed=1, header=False),
            "test": write_parallel_tsv(root / "test.tsv", 60, seed=2),
            "test_headerless": write_parallel_tsv(root / "test.txt", 60, seed=2, header=False)}


@pytest.fixture(scope="module")
def gpt(corpus, tmp_path_factory):
    result = finetune("translation_gpt", [f"data.train={corpus['train']}", f"data.test={corpus['test']}", *TINY,
                                          *COMMON, "trainer.max_steps=350", "trainer.eval_every=350"],
                      tmp_path_factory.mktemp("gpt") / "run")
    return result, evaluate(result.run_dir)


@pytest.fixture(scope="module")
def t5(corpus, tmp_path_factory):
    result = finetune("translation_t5", [f"data.train={corpus['headerless']}", "data.format=pairs",
                                         f"data.test={corpus['test_headerless']}", *TINY, "backbone.num_heads=4",
                                         *COMMON,
                                         "trainer.max_steps=400", "trainer.eval_every=400"],
                      tmp_path_factory.mktemp("t5") / "run")
    return result, evaluate(result.run_dir)


def copy_baseline(run_dir):
    rows = read_jsonl(run_dir / "eval" / "predictions.jsonl")
    return translation_scores([r["source"] for r in rows], [r["target"] for r in rows])["bleu"]


@pytest.mark.parametrize("name", ["gpt", "t5"])
def test_bleu_above_30_after_training(name, request):
    result, report = request.getfixturevalue(name)
    assert copy_baseline(result.run_dir) < 1
    assert report["bleu"] > 30 and report["chrf"] > 60, report
    assert report["num_examples"] == 60
    assert result.metrics["test/bleu"] == pytest.approx(report["bleu"])
    saved = json.loads((result.run_dir / "eval" / "metrics.json").read_text())
    assert saved["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    assert set(rows[0]) == {"source", "target", "prediction"}
    assert translation_scores([r["prediction"] for r in rows], [r["target"] for r in rows])["bleu"] == \
        pytest.approx(report["bleu"])


def test_gpt_batched_generation_matches_one_at_a_time(gpt):
    """Prompts are padded on the left in a batch; the positions must not shift."""
    result, report = gpt
    batched = [r["prediction"] for r in read_jsonl(result.run_dir / "eval" / "predictions.jsonl")]
    single = evaluate(result.run_dir, ["trainer.eval_batch_size=1"])
    assert [r["prediction"] for r in read_jsonl(result.run_dir / "eval" / "predictions.jsonl")] == batched
    assert single["bleu"] == pytest.approx(report["bleu"])


def test_beam_search(gpt):
    result, greedy = gpt
    beam = evaluate(result.run_dir, ["task.generation.num_beams=3", "task.generation.length_penalty=0.8"])
    assert beam["bleu"] > 30


def test_gpt_model_reloads_as_causal_lm(gpt):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _ = gpt
    evaluate(result.run_dir)  # greedy predictions (another test may have left beam search's)
    model_dir = result.run_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    separator = model.config.task_specific_params["translation"]["separator"]
    assert separator == "<sep>" and tokenizer.padding_side == "left"
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")[:8]
    enc = tokenizer([r["source"] + separator for r in rows], add_special_tokens=False, padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc)  # generation_config.json carries max_new_tokens, eos and pad
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [t.strip() for t in texts] == [r["prediction"] for r in rows]


def test_t5_model_reloads_as_seq2seq_lm(t5):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    result, _ = t5
    model_dir = result.run_dir / "model"
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert model.config.decoder_start_token_id == tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")[:8]
    with torch.no_grad():
        out = model.generate(**tokenizer([r["source"] for r in rows], padding=True, return_tensors="pt"))
    assert [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)] == [r["prediction"] for r in rows]


def test_t5_continues_from_a_run_folder(t5, corpus, tmp_path):
    """backbone.pretrained=<run folder> loads its model/ and tokenizer: two steps at a
    tiny learning rate keep the trained model's BLEU (a random T5 scores about 0)."""
    result, _ = t5
    again = finetune("translation_t5", [f"data.train={corpus['train']}", f"data.test={corpus['test']}", *TINY,
                                        "backbone.num_heads=4", *COMMON, f"backbone.pretrained={result.run_dir}",
                                        "trainer.max_steps=2", "optim.lr=1e-6"], tmp_path / "run")
    assert again.metrics["test/bleu"] > 30, again.metrics


def test_gpt_from_a_pretrained_folder_gets_a_separator_row(corpus, tmp_path):
    """A causal LM folder without the separator: the token is added to its tokenizer and
    the embedding matrix grows by one row."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from fmctl.data.tokenizer_training import train_tokenizer

    lines = corpus["train"].read_text(encoding="utf-8").splitlines()[1:]
    tokenizer = train_tokenizer([s for line in lines for s in line.split("\t")], "bpe", 400, 128)
    folder = tmp_path / "pretrained"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=128,
                               pad_token_id=tokenizer.pad_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result = finetune("translation_gpt", [f"data.train={corpus['train']}", *TINY, *COMMON,
                                          f"backbone.pretrained={folder}", "trainer.max_steps=2"], tmp_path / "run")
    model = AutoModelForCausalLM.from_pretrained(result.run_dir / "model")
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) + 1
    assert "val/bleu" in result.metrics


def test_gpt_at_the_edge_of_its_positions_trains_and_generates(corpus, tmp_path):
    """data.max_length + data.max_target_length + 2 == backbone.max_positions, with widths
    that are not multiples of 8: padding must not run past the learned positions in
    training, nor generation past them in evaluation."""
    from fmctl.data.collate import PadCollator

    assert PadCollator({"input_ids": 0}, max_width=34)([{"input_ids": [1] * 33}])["input_ids"].shape == (1, 34)
    assert PadCollator({"input_ids": 0})([{"input_ids": [1] * 33}])["input_ids"].shape == (1, 40)
    result = finetune("translation_gpt", [f"data.train={corpus['train']}", f"data.test={corpus['test']}", *TINY,
                                          "data.max_length=15", "data.max_target_length=17", "backbone.max_positions=34",
                                          "task.generation.max_new_tokens=18", "trainer.max_steps=3",
                                          "trainer.eval_every=3", "trainer.batch_size=32", "data.max_eval_examples=20"],
                      tmp_path / "edge")
    assert "test/bleu" in result.metrics


def test_eval_loss_does_not_depend_on_the_batch_size(gpt):
    result, report = gpt
    small = evaluate(result.run_dir, ["trainer.eval_batch_size=7"])
    assert small["loss"] == pytest.approx(report["loss"], rel=1e-4)
    assert small["bleu"] == pytest.approx(report["bleu"])
