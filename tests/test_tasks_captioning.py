"""task=captioning on real icons of the Adwaita theme (`fmctl data icons`): a tiny ViT or CvT
encoder with a GPT-2 decoder overfits eight image-caption pairs exactly, model/ reloads
with VisionEncoderDecoderModel and fmctl's generation ids, predict writes the captions, an
hf export generates the same tokens; CIDEr-D against a hand-computed case; bad input is
one line."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from fmctl.errors import ConfigError, DataError, ExportError, ModelError
from fmctl.evaluate.captioning import caption_scores, cider_d, cider_tokens
from tests.helpers import compose, finetune

PAIRS = 8
TINY = ["data.validation={train}", "data.test=null", "backbone.image_size=16",
        "task.decoder.hidden_size=32", "task.decoder.num_layers=1", "task.decoder.num_heads=2",
        "task.decoder.dropout=0.0",
        "backbone.drop_path=0.0", "trainer.batch_size=8",
        "trainer.precision=fp32", "trainer.progress=off", "optim.lr=1e-2", "optim.weight_decay=0.0",
        "sched.warmup_ratio=0.0",
        # One thread: these models are too small to gain from two, and on a busy machine a second
        # OpenMP thread spin-waits for the core it shares (ten times the CPU time, measured).
        "trainer.num_threads=1"]
VIT = ["backbone.hidden_size=32", "backbone.num_layers=1", "backbone.num_heads=2"]
CVT = ["backbone=cvt", "backbone.embed_dims=[16,32,32]", "backbone.num_heads=[1,2,2]", "backbone.depths=[1,2,3]"]


# ---- CIDEr-D ---------------------------------------------------------------------------
def test_cider_d_matches_a_hand_computed_case():
    # Two images, each n-gram in one image's references: idf = log(2) for every n-gram. A
    # two-word caption equal to its reference scores cosine 1 for unigrams and bigrams, 0 for
    # the 3- and 4-grams it has none of: mean 0.5, times 10 -> 5.
    assert cider_d(["a b", "c d"], [["a b"], ["c d"]]) == pytest.approx(5.0)
    # 'a c' against 'a b': unigram vectors (log2, log2) and (log2, 0) on {a, c}; the clipped
    # product over the norms is log2^2 / (2 log2^2) = 0.5, no bigram in common; same length
    # (no penalty): (0.5 + 0 + 0 + 0) / 4 * 10 = 1.25. Mean with the perfect 5: 3.125.
    assert cider_d(["a c", "c d"], [["a b"], ["c d"]]) == pytest.approx(3.125)
    # 'c d e' against 'c d' (an n-gram no reference has weighs log(2) too): unigram cosine
    # 2 / sqrt(6), bigram 1 / sqrt(2), and one more bigram than the reference, so the
    # Gaussian length penalty (sigma 6) is exp(-1 / 72).
    longer = (2 / math.sqrt(6) + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4 * 10
    assert cider_d(["a b", "c d e"], [["a b"], ["c d"]]) == pytest.approx((5.0 + longer) / 2)
    assert cider_d(["a b"], [["..."]]) == 0.0   # no word in any reference: 0, not a crash


def test_cider_tokens_lower_case_and_drop_punctuation():
    assert cider_tokens("A status icon: Audio-Volume high.") == "a status icon audio volume high"
    assert cider_tokens("don't stop") == "don't stop"


def test_caption_scores_read_every_reference_of_an_image():
    hypotheses = ["a red fox in snow", "a blue car on a road"]
    scores = caption_scores(hypotheses, [["a red fox in grass", "a fox"], ["a car on a road"]])
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
    # the second reference of the first image matches: a perfect score, whatever the first says
    perfect = caption_scores(hypotheses, [["the fox", "a red fox in snow"], ["a blue car on a road"]])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert not math.isnan(perfect["cider"])


# ---- overfitting real icons -------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """Eight test icons of the theme (16 px, distinct captions), their paths absolute."""
    from fmctl.data.icons import IconsConfig, make_icons

    out = tmp_path_factory.mktemp("icons") / "pairs"
    make_icons(IconsConfig(out=str(out), size=16))
    with (out / "test.csv").open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if "/16x16/" in r["image"]]
    chosen, seen = [], set()
    for row in rows:
        if row["caption"] not in seen:
            seen.add(row["caption"])
            chosen.append({"image": str(out / row["image"]), "caption": row["caption"]})
        if len(chosen) == PAIRS:
            break
    table = out / "few.csv"
    with table.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "caption"])
        writer.writeheader()
        writer.writerows(chosen)
    return table


def _train(table: Path, run_dir: Path, extra: list[str], steps: int = 100):
    overrides = [f"data.train={table}", *[o.format(train=table) for o in TINY], f"trainer.max_steps={steps}",
                 f"trainer.eval_every={steps}", *extra]
    return finetune("caption_icons", overrides, run_dir)


@pytest.fixture(scope="module")
def vit_run(pairs, tmp_path_factory):
    return _train(pairs, tmp_path_factory.mktemp("caption") / "vit", VIT)


def _captions(table: Path) -> dict[str, str]:
    with table.open(encoding="utf-8", newline="") as f:
        return {Path(r["image"]).name: r["caption"] for r in csv.DictReader(f)}


def test_vit_captioner_overfits_every_caption_exactly(vit_run):
    metrics = vit_run.metrics
    assert metrics["val/bleu"] == pytest.approx(100.0)
    assert metrics["val/chrf"] == pytest.approx(100.0)
    assert metrics["val/cider"] == pytest.approx(10.0)
    assert metrics["val/loss"] < 0.2


def test_model_folder_reloads_with_vision_encoder_decoder_and_fmctl_ids(vit_run, pairs):
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    from fmctl.data.images import open_image

    model_dir = vit_run.run_dir / "model"
    model = VisionEncoderDecoderModel.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    generation = json.loads((model_dir / "generation_config.json").read_text())
    # the trained tokenizer's ids, not GPT-2's 50256
    assert generation["eos_token_id"] == tokenizer.eos_token_id != 50256
    assert generation["decoder_start_token_id"] == model.config.decoder_start_token_id == tokenizer.bos_token_id
    assert generation["pad_token_id"] == tokenizer.pad_token_id
    truth = _captions(pairs)
    with pairs.open(encoding="utf-8", newline="") as f:
        images = [Path(r["image"]) for r in csv.DictReader(f)]
    pixels = AutoImageProcessor.from_pretrained(str(model_dir))(
        [open_image(p, "RGB") for p in images], return_tensors="pt").pixel_values
    with torch.no_grad():
        out = model.generate(pixel_values=pixels)
    got = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    assert got == [truth[p.name] for p in images]


def test_predict_writes_a_caption_per_image_and_hf_export_agrees(vit_run, pairs, tmp_path):
    from fmctl.export.context import ExportOptions
    from fmctl.export.run import export_run
    from fmctl.predict.run import predict

    folder = tmp_path / "images"
    folder.mkdir()
    truth = _captions(pairs)
    with pairs.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            shutil.copy(row["image"], folder / Path(row["image"]).name)
    for target in (vit_run.run_dir, None):
        if target is None:
            target = tmp_path / "hf"
            export_run(vit_run.run_dir, ExportOptions("hf"), out=target, log=lambda _s: None)
            manifest = json.loads((target / "export_manifest.json").read_text())
            assert manifest["parity"]["label_agreement"] == 1.0 and manifest["parity"]["passed"]
        out = tmp_path / f"{target.name}.jsonl"
        summary = predict(target, images=folder, out=out, log=lambda _s: None)
        assert summary.predicted == PAIRS and not summary.errors
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert {Path(r["image"]).name: r["caption"] for r in records} == truth


def test_cvt_captioner_overfits_every_caption_exactly(pairs, tmp_path):
    # read as tokens: its last stage's grid flattened, the class token first
    result = _train(pairs, tmp_path / "cvt", CVT)
    assert result.metrics["val/bleu"] == pytest.approx(100.0)
    assert result.metrics["val/cider"] == pytest.approx(10.0)
    saved = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert saved["encoder"]["model_type"] == "cvt" and saved["fmctl_captioning"]["encoder_family"] == "cvt"


# ---- a pretrained decoder ------------------------------------------------------------------
def _decoder_folder(root: Path, vit_run, kind: str) -> Path:
    """A tiny causal LM saved with the run's tokenizer: GPT-2 (no cross-attention yet) or Llama."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(vit_run.run_dir / "model"))
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2,
                                           n_positions=32))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    folder = root / kind
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_a_pretrained_gpt2_decoder_gets_cross_attention(vit_run, pairs, tmp_path):
    folder = _decoder_folder(tmp_path, vit_run, "gpt2")
    result = _train(pairs, tmp_path / "run", [*VIT, f"task.decoder.pretrained={folder}"], steps=2)
    config = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert config["decoder"]["add_cross_attention"] is True and config["decoder"]["model_type"] == "gpt2"


def test_a_decoder_without_cross_attention_is_refused_in_one_line(vit_run, pairs, tmp_path):
    folder = _decoder_folder(tmp_path, vit_run, "llama")
    with pytest.raises(ModelError) as err:
        _train(pairs, tmp_path / "run", [*VIT, f"task.decoder.pretrained={folder}"], steps=2)
    message = str(err.value)
    assert "\n" not in message and message.startswith("task.decoder.pretrained:")
    assert "llama" in message and "cross-attention" in message and "gpt2" in message
    assert not (tmp_path / "run" / "model").exists()


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key, words", [
    (["task.decoder.name=bert"], "task.decoder.name", "task.decoder.name=gpt"),
    (["data.max_target_length=40"], "data.max_target_length", "task.decoder.max_positions (32)"),
    (["backbone.pretrained=/some/timm/vit"], "backbone.pretrained", "backbone=cvt"),
])
def test_config_problems_name_their_key(overrides, key, words):
    with pytest.raises(ConfigError) as err:
        compose("caption_icons", overrides)
    assert any(line.startswith(f"{key}:") and words in line for line in str(err.value).splitlines())


def test_a_table_without_the_image_column_is_one_line(pairs, tmp_path):
    table = tmp_path / "no_image.csv"
    table.write_text("picture,caption\n" + "".join(f"{p},x\n" for p in ["a.png", "b.png"]), encoding="utf-8")
    with pytest.raises(DataError) as err:
        _train(table, tmp_path / "run", VIT, steps=1)
    assert "\n" not in str(err.value) and "image" in str(err.value) and str(table) in str(err.value)


def test_onnx_export_is_refused_naming_the_formats(vit_run):
    from fmctl.export.context import ExportOptions
    from fmctl.export.run import export_run

    with pytest.raises(ExportError, match="format 'onnx' is not supported for task 'captioning'; captioning "
                                          "exports to: hf"):
        export_run(vit_run.run_dir, ExportOptions("onnx"), log=lambda _s: None)


def test_gradient_checkpointing_trains_the_same_model(pairs, tmp_path):
    plain = _train(pairs, tmp_path / "plain", VIT, steps=2)
    checkpointed = _train(pairs, tmp_path / "ckpt", [*VIT, "trainer.gradient_checkpointing=true"], steps=2)
    assert checkpointed.metrics["val/loss"] == pytest.approx(plain.metrics["val/loss"], rel=1e-5)
