"""Backbone families: the registry, each family's declared structure (wrappers, SimMIM,
T5's two stacks), the position-table check, and a model made of two towers (a tiny timm
ViT and a tiny transformers BERT with two projections) whose groups, freezing, LoRA,
pruning and layer-wise learning rates follow each tower."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fmctl import backbones
from fmctl.backbones import structure_of, towers
from fmctl.backbones.base import BackboneFamily
from fmctl.config.schema import VisionBackboneConfig
from fmctl.errors import ConfigError, ModelError

HEAVY = ("torch", "transformers", "timm", "peft")


def test_the_registry_and_every_family_declaration_import_no_heavy_library():
    code = ("import sys; from fmctl import backbones; "
            "fams = [backbones.family(n) for n in backbones.names()]; "
            "assert [f.name for f in fams] == ['bert', 'gpt', 't5', 'vit', 'clip', 'cvt', 'encoder_decoder'], fams; "
            "assert fams[0].model_types and fams[0].lora_targets and fams[2].tokenizer_kind == 't5'; "
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_an_unknown_family_names_the_closest_and_the_choices():
    with pytest.raises(ConfigError) as caught:
        backbones.family("bret")
    assert str(caught.value) == ("backbone.name: unknown backbone 'bret' (did you mean 'bert'?); "
                                 "available: bert, gpt, t5, vit, clip, cvt, encoder_decoder")


def test_text_families_own_their_model_types_and_tokenizers():
    declared = {n: backbones.family(n) for n in ("bert", "gpt", "t5")}
    assert "roberta" in declared["bert"].model_types and "llama" in declared["gpt"].model_types
    assert "bart" in declared["t5"].model_types
    assert not (declared["bert"].model_types & declared["gpt"].model_types)
    assert [f.tokenizer_kind for f in declared.values()] == ["wordpiece", "bpe", "t5"]
    from fmctl.models.text import _check_family

    with pytest.raises(ModelError, match=r"is a decoder \(llama\); use backbone=gpt"):
        _check_family("bert", "llama", "x")
    _check_family("bert", "some-new-encoder", "x")  # unknown types are let through


def _bert(layers: int = 2, cls=None, **extra):
    from transformers import BertConfig, BertForSequenceClassification

    cls = cls or BertForSequenceClassification
    return cls(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                          intermediate_size=64, num_labels=3, **extra))


def _vit(depth: int = 2, num_classes: int = 3):
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=32,
                             depth=depth, num_heads=2, num_classes=num_classes)


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                               num_decoder_layers=2, num_heads=2))


def test_structure_looks_through_peft_and_torch_compile_and_simmim():
    from peft import LoraConfig, get_peft_model

    from fmctl.models.simmim import SimMIM

    plain = _bert()
    assert structure_of(plain, "bert").stacks == ("bert.encoder.layer",)
    groups = structure_of(plain, "bert").groups(plain)
    assert groups["head"] == ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                              "classifier.bias"]
    compiled = torch.compile(_bert())
    assert structure_of(compiled, "bert").stacks == ("_orig_mod.bert.encoder.layer",)
    wrapped = get_peft_model(_bert(), LoraConfig(r=2, target_modules=["query"]))
    structure = structure_of(wrapped, "bert")
    assert structure.stacks == ("base_model.model.bert.encoder.layer",) and structure.root == "base_model.model."
    assert structure.groups(wrapped)["head"][-1] == "base_model.model.classifier.bias"
    simmim = SimMIM(_vit(num_classes=0))
    structure = structure_of(simmim, "vit")
    assert structure.stacks == ("encoder.blocks",)
    assert "mask_token" in structure.no_decay and "encoder.pos_embed" in structure.no_decay
    groups = structure.groups(simmim)
    assert groups["embeddings"][:2] == ["mask_token", "encoder.cls_token"] and "decoder.weight" in groups["final_norm"]


def test_t5_groups_cover_encoder_then_decoder_and_drop_layers_refuses_two_stacks():
    from fmctl.config.schema import DropLayersOp, FreezeOp
    from fmctl.customize import Context, freeze, layers

    model = _t5()
    structure = structure_of(model, "t5")
    assert structure.stacks == ("encoder.block", "decoder.block")
    groups = structure.groups(model)
    assert list(groups) == ["embeddings", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "final_norm"]
    assert all(n.startswith("encoder.block.1.") for n in groups["blocks.1"])
    assert all(n.startswith("decoder.block.0.") for n in groups["blocks.2"])
    assert groups["embeddings"] == ["shared.weight"]
    assert sorted(n for g in groups.values() for n in g) == sorted(n for n, _ in model.named_parameters())
    ctx = Context(run=SimpleNamespace(backbone=SimpleNamespace(name="t5")), task=None, data=None)
    freeze.apply(model, FreezeOp(bottom=1), ctx)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(groups["blocks.0"])
    with pytest.raises(ConfigError) as caught:
        layers.apply(model, DropLayersOp(keep=[0]), ctx)
    assert str(caught.value) == ("customize.drop_layers: backbone 't5' has 2 block stacks (encoder.block, "
                                 "decoder.block); drop_layers works on a single stack")
    from fmctl.config.schema import LoraOp, PruneOp
    from fmctl.customize import lora, prune

    assert prune.apply(_t5(), PruneOp(sparsity=0.0, heads=0.5), ctx)[1] == {"heads": "2 -> 1", "heads_removed": 6}
    from transformers import BartConfig, BartForConditionalGeneration

    bart = BartForConditionalGeneration(BartConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=32, decoder_ffn_dim=32))
    with pytest.raises(ConfigError) as caught:  # BART derives head width from d_model / heads
        prune.apply(bart, PruneOp(sparsity=0.0, heads=0.5), ctx)
    assert str(caught.value) == ("customize.prune.heads: found no attention at layer.0.SelfAttention, "
                                 "layer.1.EncDecAttention in the t5 model's blocks; heads can be removed from "
                                 "T5-style attention only (T5, mT5)")
    from fmctl.backbones.structure import Structure

    with pytest.raises(ConfigError) as caught:  # a family that declares neither
        prune.head_masks(_vit(), 0.5, Structure(family="cvt", stacks=("blocks",)))
    assert str(caught.value) == ("customize.prune.heads: prune zeroes the heads of bert, gpt and vit backbones and "
                                 "removes those of t5, not 'cvt'")
    assert prune.apply(_t5(), PruneOp(sparsity=0.0, ffn=0.5), ctx)[1] == {"ffn_width": "32 -> 16",
                                                                          "ffn_channels_removed": 4 * 16}
    from transformers import T5Config, T5ForConditionalGeneration

    gated = T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                                feed_forward_proj="gated-gelu"))
    with pytest.raises(ConfigError) as caught:  # T5 v1.1's wi_0 / wi_1
        prune.apply(gated, PruneOp(sparsity=0.0, ffn=0.5), ctx)
    assert str(caught.value) == ("customize.prune.ffn: cannot find the feed-forward layers (layer.-1.DenseReluDense.wi, "
                                 "layer.-1.DenseReluDense.wo) of a t5 block")
    adapted, _ = lora.apply(_t5(), LoraOp(r=2), ctx)  # peft's defaults for T5: q and v
    assert {n.split(".")[-4] for n, _ in adapted.named_parameters() if "lora_A" in n} == {"q", "v"}


def test_position_tables_come_from_the_family_and_keep_their_messages():
    from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaForSequenceClassification

    from fmctl.models.positions import check_positions
    from fmctl.tasks.declare import Length

    def run(name, pretrained=None):
        return SimpleNamespace(backbone=SimpleNamespace(name=name, pretrained=pretrained))

    roberta = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, pad_token_id=1))
    assert backbones.family("bert").position_table(roberta) == 64  # 66 less the padding offset
    check_positions(run("bert"), roberta, [Length("data.max_length", 64)])
    with pytest.raises(ModelError) as caught:
        check_positions(run("bert", "runs/r"), roberta, [Length("data.max_length", 65)])
    assert str(caught.value) == "data.max_length: 65 exceeds the 64 positions of the pretrained 'runs/r'; lower it"
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=512))
    assert backbones.family("gpt").position_table(gpt) == 512
    with pytest.raises(ModelError) as caught:
        check_positions(run("gpt"), gpt, [Length("data.max_target_length", 600,
                                                 "data.max_length + data.max_target_length + 2")])
    assert str(caught.value) == ("data.max_target_length: data.max_length + data.max_target_length + 2 = 600 "
                                 "exceeds the 512 positions of the model; lower them")
    assert backbones.family("t5").position_table(_t5()) is None  # relative positions: no table
    assert backbones.family("vit").position_table(_vit()) is None
    check_positions(run("t5"), _t5(), [Length("data.max_length", 10**6)])


class TwoTower(nn.Module):
    """CLIP-shaped: a 2-block image tower, a 3-block text tower, two projections and a
    logit scale of its own."""

    def __init__(self):
        super().__init__()
        from transformers import BertModel

        self.image_tower = _vit(depth=2, num_classes=0)
        self.text_tower = _bert(layers=3, cls=BertModel)
        self.image_projection = nn.Linear(32, 16, bias=False)
        self.text_projection = nn.Linear(32, 16, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, pixel_values, input_ids):
        image = self.image_projection(self.image_tower(pixel_values))
        text = self.text_projection(self.text_tower(input_ids=input_ids).pooler_output)
        return self.logit_scale.exp() * image @ text.T


class TwoTowerFamily(BackboneFamily):
    name = "test_two_tower"
    config = VisionBackboneConfig
    modalities = ("image", "text")

    def structure(self, model):
        return towers(model, {"image": ("vit", "image_tower"), "text": ("bert", "text_tower")}, family=self.name)


@pytest.fixture(scope="module")
def two_tower_family():
    backbones.register(TwoTowerFamily())
    yield
    backbones.unregister("test_two_tower")


def _ctx():
    from fmctl.customize import Context

    run = SimpleNamespace(backbone=SimpleNamespace(name="test_two_tower"), base=None)
    return Context(run=run, task=None, data=SimpleNamespace(label_names=[]))


def test_register_refuses_a_taken_name_and_lists_the_new_family(two_tower_family):
    assert backbones.names()[-1] == "test_two_tower"
    with pytest.raises(ValueError, match="exists"):
        backbones.register(TwoTowerFamily())
    with pytest.raises(ValueError, match="exists"):
        backbones.register(type("Clash", (TwoTowerFamily,), {"name": "bert"})())


def test_tower_groups_cover_every_parameter_once_named_by_tower(two_tower_family):
    torch.manual_seed(0)
    model = TwoTower()
    groups = structure_of(model, "test_two_tower").groups(model)
    assert list(groups) == ["image.embeddings", "image.blocks.0", "image.blocks.1", "image.final_norm",
                            "text.embeddings", "text.blocks.0", "text.blocks.1", "text.blocks.2", "text.head", "head"]
    names = [n for members in groups.values() for n in members]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and len(names) == len(set(names))
    assert groups["head"] == ["logit_scale", "image_projection.weight", "text_projection.weight"]
    assert all(n.startswith("text_tower.encoder.layer.2.") for n in groups["text.blocks.2"])
    assert groups["text.head"] == ["text_tower.pooler.dense.weight", "text_tower.pooler.dense.bias"]
    exempt = structure_of(model, "test_two_tower").no_decay
    assert {"logit_scale", "image_tower.pos_embed", "image_tower.cls_token", "text_tower.pooler.dense.bias"} <= exempt
    assert "image_projection.weight" not in exempt
    assert "text_tower.encoder.layer.0.attention.self.query.weight" not in exempt


def test_freeze_bottom_freezes_the_bottom_blocks_of_each_tower(two_tower_family):
    from fmctl.config.schema import FreezeOp
    from fmctl.customize import freeze

    model = TwoTower()
    _, details = freeze.apply(model, FreezeOp(bottom=1), _ctx())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("image_tower.blocks.0.", "text_tower.encoder.layer.0.")) for n in frozen)
    assert any(n.startswith("image_tower.blocks.0.") for n in frozen)
    assert any(n.startswith("text_tower.encoder.layer.0.") for n in frozen)
    groups = structure_of(model, "test_two_tower").groups(model)
    assert frozen == set(groups["image.blocks.0"]) | set(groups["text.blocks.0"])
    assert details["frozen_tensors"] == len(frozen)
    with pytest.raises(ConfigError) as caught:
        freeze.apply(TwoTower(), FreezeOp(bottom=3), _ctx())
    assert str(caught.value) == "customize.freeze.bottom: 3 blocks asked for but the image tower has 2"
    model = TwoTower()
    freeze.apply(model, FreezeOp(embeddings=True), _ctx())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == set(groups["image.embeddings"]) | set(groups["text.embeddings"])


def test_lora_default_targets_hit_both_towers_and_train_the_projections(two_tower_family):
    from fmctl.config.schema import LoraOp
    from fmctl.customize import lora

    torch.manual_seed(0)
    ctx = _ctx()
    model, details = lora.apply(TwoTower(), LoraOp(r=2), ctx)
    assert details["targets"] == "qkv,attn.proj,query,key,value"
    adapted = {n.split(".lora_")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert any(".image_tower.blocks.1.attn.qkv" in n for n in adapted)
    assert any(".image_tower.blocks.0.attn.proj" in n for n in adapted)
    assert any(".text_tower.encoder.layer.2.attention.self.value" in n for n in adapted)
    assert details["head_modules"] == "text_tower.pooler,image_projection,text_projection"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or "modules_to_save" in n for n in trainable), trainable
    pixels, ids = torch.randn(2, 3, 16, 16), torch.randint(1, 50, (2, 7))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
        unmerged = model.eval()(pixels, ids)
        merged = ctx.finalizers[0](model, None).eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged(pixels, ids), unmerged, atol=1e-4)


def test_layer_decay_decays_each_tower_from_its_own_top(two_tower_family):
    from fmctl.loop.optim import lr_scales, parameter_groups

    model = TwoTower()
    structure = structure_of(model, "test_two_tower")
    scales = lr_scales(model, structure, 0.5, 10.0)
    assert scales["image_tower.blocks.1.attn.qkv.weight"] == 0.5           # image top: 2 blocks
    assert scales["image_tower.blocks.0.attn.qkv.weight"] == 0.25
    assert scales["image_tower.patch_embed.proj.weight"] == 0.125
    assert scales["image_tower.norm.weight"] == 1.0
    assert scales["text_tower.encoder.layer.2.output.dense.weight"] == 0.5  # text top: 3 blocks
    assert scales["text_tower.encoder.layer.0.output.dense.weight"] == 0.125
    assert scales["text_tower.embeddings.word_embeddings.weight"] == 0.0625
    assert scales["text_tower.pooler.dense.weight"] == 1.0                  # a tower's pooler: its top, no head mult
    assert scales["image_projection.weight"] == scales["logit_scale"] == 10.0  # the composed model's head
    groups = parameter_groups(model, structure, 0.01, lr=1.0, layer_decay=0.5, head_lr_mult=10.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_pruning_and_dropout_reach_both_towers_and_drop_layers_refuses_towers(two_tower_family):
    from fmctl.config.schema import DropLayersOp, DropoutOp, PruneOp
    from fmctl.customize import dropout, layers, prune

    torch.manual_seed(0)
    model, details = prune.apply(TwoTower(), PruneOp(sparsity=0.0, heads=0.5, ffn=0.25), _ctx())
    assert details["heads_zeroed"] == 5  # one of two heads in each of 2 + 3 blocks
    assert details["ffn_width"] == "128 -> 96, 64 -> 48"  # each tower's blocks, recorded in its own config
    assert model.image_tower._model_args["mlp_ratio"] * 32 == pytest.approx(96)
    assert model.text_tower.config.intermediate_size == 48
    assert {b.mlp.fc1.out_features for b in model.image_tower.blocks} == {96}
    assert {b.intermediate.dense.out_features for b in model.text_tower.encoder.layer} == {48}
    model, details = dropout.apply(TwoTower(), DropoutOp(hidden=0.2, attention=0.3), _ctx())
    assert details["attention_modules"] == 2 + 3
    assert model.image_tower.blocks[1].attn.attn_drop.p == 0.3
    assert model.text_tower.encoder.layer[0].attention.self.dropout.p == 0.3
    assert model.text_tower.config.attention_probs_dropout_prob == 0.3
    assert model.text_tower.config.hidden_dropout_prob == 0.2
    with pytest.raises(ConfigError, match="drop_layers works on a single stack"):
        layers.apply(TwoTower(), DropLayersOp(keep=[0]), _ctx())


def test_families_build_save_and_load_through_the_shipped_model_functions(tmp_path):
    from fmctl.config.schema import TextBackboneConfig

    texts = ["a short text about nothing", "another text with other words"] * 20
    shape = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_positions": 64}
    bert, gpt, t5, vit = (backbones.family(n) for n in ("bert", "gpt", "t5", "vit"))
    cfg = TextBackboneConfig(name="bert", vocab_size=200, **shape)
    tokenizer = bert.preprocessor(cfg, training_texts=lambda: texts)
    assert "[CLS]" in tokenizer.get_vocab()  # WordPiece, as the family declares
    model = bert.build(cfg, "sequence_classification", tokenizer, label_names=["a", "b"]).eval()
    bert.save(model, tmp_path / "bert", tokenizer)
    loaded, reloaded_tokenizer = bert.load(tmp_path / "bert", "sequence_classification")
    ids = tokenizer(texts[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(loaded(**ids).logits, model(**ids).logits, atol=1e-5)
    assert reloaded_tokenizer.get_vocab() == bert.preprocessor(cfg, folder=tmp_path / "bert").get_vocab()
    assert type(bert.build(cfg, "pretraining", tokenizer)).__name__ == "BertForMaskedLM"
    gpt_cfg = TextBackboneConfig(name="gpt", vocab_size=200, **shape)
    assert type(gpt.build(gpt_cfg, "pretraining", gpt.preprocessor(gpt_cfg, training_texts=lambda: texts))).__name__ \
        == "GPT2LMHeadModel"
    with pytest.raises(ValueError, match="no pretraining objective"):
        t5.build(TextBackboneConfig(name="t5", **shape), "pretraining", tokenizer)

    image_cfg = VisionBackboneConfig(hidden_size=32, num_layers=2, num_heads=2, image_size=16)
    model = vit.build(image_cfg, "image_classification", num_classes=3).eval()
    vit.save(model, tmp_path / "vit", label_names=["x", "y", "z"])
    loaded, preprocessing = vit.load(tmp_path / "vit")
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(pixels), model(pixels), atol=1e-5)
    assert preprocessing == vit.preprocessor(image_cfg, model=model)
    assert preprocessing == vit.preprocessor(image_cfg, folder=tmp_path / "vit")
    assert vit.build(image_cfg, "pretraining").num_classes == 0  # the encoder SimMIM wraps


def test_the_towers_function_is_not_shadowed_by_its_module():
    """`fmctl.backbones.towers(...)` is the documented call; a submodule of the same name
    would replace it on the package as soon as anything imported that submodule."""
    import importlib

    import fmctl.backbones

    importlib.import_module("fmctl.backbones.composed")
    assert callable(fmctl.backbones.towers) and fmctl.backbones.towers.__module__ == "fmctl.backbones"
