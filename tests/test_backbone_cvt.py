"""backbone=cvt: transformers' CvT at fmctl's sizes and the published shapes, its config
checks (the per-stage drop-path indexing transformers trips over), its declared structure
(three stages) as freeze, LoRA, dropout and drop_layers use it, model/ reloaded with
AutoModelForImageClassification, and a tiny run trained, evaluated, exported to ONNX
(fp32 and int8) with parity and served by predict."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fmctl import backbones
from fmctl.backbones.cvt import CvtBackboneConfig
from fmctl.errors import ConfigError, ModelError
from tests.helpers import compose, finetune, read_jsonl, run_cli

TINY_CVT = ["backbone=cvt", "backbone.embed_dims=[16,32,48]", "backbone.num_heads=[1,2,2]",
            "backbone.image_size=16", "trainer.progress=off", "trainer.precision=fp32", "trainer.num_threads=1"]


def _problems(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        compose("cvt_digits", overrides)
    return caught.value.lines()


def test_transformers_still_trips_over_short_later_stages_so_the_config_says_why_in_one_line():
    from transformers import CvtConfig, CvtForImageClassification

    with pytest.raises(IndexError):  # if this stops failing, transformers fixed modeling_cvt.py's indexing
        CvtForImageClassification(CvtConfig(depth=[1, 1, 2], embed_dim=[16, 32, 48], num_heads=[1, 2, 2]))
    assert _problems(["backbone.depths=[1,1,2]"]) == [
        "backbone.depths: stage 1 has 1 block, but transformers' CvT reads stage i's drop-path rate at position i "
        "of that stage's own rates (modeling_cvt.py), so stage 1 needs at least 2; use depths like [1, 2, 3]",
        "backbone.depths: stage 2 has 2 blocks, but transformers' CvT reads stage i's drop-path rate at position i "
        "of that stage's own rates (modeling_cvt.py), so stage 2 needs at least 3; use depths like [1, 2, 3]"]


def test_config_problems_name_the_key_and_why():
    assert _problems(["backbone.depths=[1,2]", "backbone.num_heads=[1,0,2]"]) == [
        "backbone.depths: CvT has 3 stages; give 3 numbers, got [1, 2]",
        "backbone.num_heads: every stage needs at least 1, got [1, 0, 2]"]
    assert _problems(["backbone.embed_dims=[16,30,48]", "backbone.num_heads=[1,4,2]"]) == [
        "backbone.embed_dims: stage 1 is 30 wide, which its 4 heads (backbone.num_heads) do not divide"]
    assert _problems(["trainer.gradient_checkpointing=true", "backbone.drop_path=1.5"]) == [
        "backbone.drop_path: must be < 1.0, got 1.5"]
    assert _problems(["trainer.gradient_checkpointing=true"]) == [
        "trainer.gradient_checkpointing: transformers' CvT has no activation checkpointing; "
        "set trainer.gradient_checkpointing=false"]


def test_sizes_are_fmctls_and_the_published_shapes():
    from transformers import CvtConfig

    from fmctl.models.cvt import fresh_config, shape_of

    published = fresh_config(CvtBackboneConfig(size="cvt-13"))
    assert (published.embed_dim, published.num_heads, published.depth) == (
        list(CvtConfig().embed_dim), list(CvtConfig().num_heads), list(CvtConfig().depth))  # transformers' default is CvT-13
    assert shape_of(CvtBackboneConfig(size="cvt-21")).depths == (1, 4, 16)
    assert shape_of(CvtBackboneConfig(size="tiny")).embed_dims == (32, 64, 128)    # last stage: compact tiny, H128
    assert shape_of(CvtBackboneConfig(size="base")).num_heads == (3, 6, 12)
    assert shape_of(CvtBackboneConfig(size="mini", depths=[1, 2, 5])).depths == (1, 2, 5)


def _tiny(depths=(1, 2, 3), labels=("a", "b", "c")):
    cfg = CvtBackboneConfig(embed_dims=[16, 32, 48], num_heads=[1, 2, 2], depths=list(depths), image_size=16)
    return cfg, backbones.family("cvt").build(cfg, "image_classification", label_names=list(labels))


def test_three_stages_each_with_its_downsampling_embedding_and_a_head():
    _, model = _tiny()
    structure = backbones.structure_of(model, "cvt")
    assert structure.stacks == tuple(f"cvt.encoder.stages.{i}.layers" for i in range(3))
    groups = structure.groups(model)
    assert list(groups) == ["embeddings", *(f"blocks.{i}" for i in range(6)), "head"]
    assert all(n.startswith("cvt.encoder.stages.0.embedding.") for n in groups["embeddings"])
    assert "cvt.encoder.stages.1.embedding.convolution_embeddings.projection.weight" in groups["blocks.1"]
    assert "cvt.encoder.stages.2.cls_token" in groups["blocks.3"]   # stage 2 starts at block 3
    assert groups["head"] == ["layernorm.weight", "layernorm.bias", "classifier.weight", "classifier.bias"]
    assert "cvt.encoder.stages.2.cls_token" in structure.no_decay
    from fmctl.customize.lora import check_targets

    check_targets(model, list(structure.lora_targets))  # every default target names real linear layers
    assert backbones.family("cvt").position_table(model) is None


def _ctx(cfg):
    from fmctl.customize import Context

    return Context(run=SimpleNamespace(backbone=SimpleNamespace(name="cvt"), base=None), task=None,
                   data=SimpleNamespace(label_names=["a", "b", "c"]))


def test_freeze_by_stage_dropout_and_lora_through_the_declaration():
    from fmctl.config.schema import DropoutOp, FreezeOp, LoraOp
    from fmctl.customize import dropout, freeze, lora

    cfg, model = _tiny()
    _, done = freeze.apply(model, FreezeOp(bottom=3), _ctx(cfg))   # stages 0 and 1, embeddings included
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("cvt.encoder.stages.1.embedding.") for n in frozen)
    assert not any(n.startswith(("cvt.encoder.stages.0.embedding.", "cvt.encoder.stages.2.")) for n in frozen)
    _, changed = dropout.apply(model, DropoutOp(hidden=0.2, attention=0.1), _ctx(cfg))
    assert model.config.drop_rate == [0.2] * 3 and model.config.attention_drop_rate == [0.1] * 3
    assert changed == {"hidden_modules": 3 + 6 * 2, "attention_modules": 6}
    adapted, details = lora.apply(model, LoraOp(r=2), _ctx(cfg))
    assert details["head_modules"] == "layernorm,classifier"
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert sum("lora_" in n for n in trainable) == 6 * 4 * 2   # 6 blocks x 4 projections x (A, B)


def test_drop_layers_works_stage_by_stage_and_keeps_the_model_reloadable(tmp_path):
    from transformers import AutoModelForImageClassification

    from fmctl.config.schema import DropLayersOp
    from fmctl.customize import layers

    cfg, model = _tiny(depths=(1, 2, 5))
    with pytest.raises(ConfigError, match=r"^customize.drop_layers: stage 2 has 2 blocks, .*\(blocks per stage after "
                                          r"dropping: \[1, 2, 2\]\)$"):
        layers.apply(model, DropLayersOp(keep=[0, 1, 2, 3, 4]), _ctx(cfg))
    with pytest.raises(ConfigError, match=r"stage 1 has 1 block, .*\[1, 1, 3\]"):
        layers.apply(model, DropLayersOp(every=2), _ctx(cfg))      # within each stage: [0], [0], [0, 2, 4]
    assert model.config.depth == [1, 2, 5]                           # refused before anything changed
    _, done = layers.apply(model, DropLayersOp(keep=[0, 1, 2, 3, 5, 7]), _ctx(cfg))
    assert done == {"blocks_before": 8, "blocks_after": 6, "kept": [0, 1, 2, 3, 5, 7]}
    assert model.config.depth == [1, 2, 3]
    family = backbones.family("cvt")
    family.save(model, tmp_path, family.preprocessor(cfg, model=model), ["a", "b", "c"])
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 16, 16)
    assert torch.allclose(reloaded(pixels).logits, model.eval()(pixels).logits, atol=1e-6)
    cfg, model = _tiny(depths=(1, 2, 5))
    _, done = layers.apply(model, DropLayersOp(bottom=3, every=None), _ctx(cfg))  # each stage's first 3 (or fewer)
    assert done["kept"] == [0, 1, 2, 3, 4, 5] and model.config.depth == [1, 2, 3]


def test_model_folder_reloads_in_transformers_and_as_a_pretrained_start(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    family = backbones.family("cvt")
    cfg, model = _tiny()
    prep = family.preprocessor(cfg, model=model)
    assert prep == {"image_size": 16, "in_chans": 3, "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0,
                    "crop_mode": "center", "interpolation": "bilinear"}
    family.save(model, tmp_path / "m", prep, ["a", "b", "c"])
    assert backbones.of_folder(tmp_path / "m") is family
    loaded, loaded_prep = family.load(tmp_path / "m")
    assert loaded_prep == prep and loaded.config.id2label == {0: "a", 1: "b", 2: "c"}
    pixels = torch.randn(2, 3, 16, 16)
    reference = model.eval()(pixels).logits
    assert torch.equal(AutoModelForImageClassification.from_pretrained(tmp_path / "m").eval()(pixels).logits, reference)
    assert AutoImageProcessor.from_pretrained(tmp_path / "m").size == {"shortest_edge": 16}
    # a pretrained start: the encoder's weights, a new classifier for new labels, another input size
    start = CvtBackboneConfig(pretrained=str(tmp_path / "m"), image_size=24, drop_path=0.0)
    again = family.build(start, "image_classification", label_names=["x", "y"])
    assert again.config.id2label == {0: "x", 1: "y"} and family.preprocessor(start, model=again)["image_size"] == 24
    same = "cvt.encoder.stages.2.layers.2.output.dense.weight"
    assert torch.equal(again.state_dict()[same], model.state_dict()[same])
    (tmp_path / "m" / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError, match="has no preprocessor_config.json; save the CvT's image processor"):
        family.preprocessor(start, model=again)


def test_a_folder_of_another_family_is_refused_with_the_backbone_to_use(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelError, match=r"is not a CvT \(model_type bert\); use backbone=bert$"):
        backbones.family("cvt").build(CvtBackboneConfig(pretrained=str(tmp_path / "bert")), "features")
    from fmctl.models.text import _check_family

    with pytest.raises(ModelError, match=r"is an image model \(cvt\); use backbone=cvt"):
        _check_family("bert", "cvt", "x")


@pytest.fixture(scope="module")
def tiny_cvt_run(shapes, tmp_path_factory) -> Path:
    return finetune("image_folder", [f"data.train={shapes}", *TINY_CVT, "trainer.max_steps=30", "trainer.batch_size=16",
                                     "optim.lr=3e-3"], tmp_path_factory.mktemp("cvt") / "run").run_dir


def test_a_cvt_run_learns_exports_with_parity_and_is_served(tiny_cvt_run, tmp_path):
    """Trained on the shapes (horizontal vs vertical bars), model/ is transformers' own; the
    ONNX export (fp32 and int8) matches PyTorch on the validation images, and predict gives
    the run folder's labels from the export."""
    from transformers import AutoModelForImageClassification

    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from fmctl.predict.run import predict
    from tests.helpers import write_shapes_folder

    manifest = json.loads((tiny_cvt_run / "manifest.json").read_text())
    assert manifest["backbone"] == "cvt" and manifest["metrics"]["val/accuracy"] >= 0.9
    assert type(AutoModelForImageClassification.from_pretrained(tiny_cvt_run / "model")).__name__ == \
        "CvtForImageClassification"
    exported = export_run(tiny_cvt_run, ExportOptions(fmt="onnx", quantize="int8"), log=lambda _line: None).manifest
    assert exported["parity"]["passed"] and exported["parity"]["max_abs_diff"] <= 1e-4
    assert exported["parity"]["label_agreement"] == 1.0 and exported["parity_int8"]["label_agreement"] >= 0.95
    assert exported["preprocessing"]["crop_mode"] == "center" and exported["preprocessing"]["image_size"] == 16
    images = write_shapes_folder(tmp_path / "images", per_class=6, seed=21)
    predict(tiny_cvt_run, images=images, out=tmp_path / "run.jsonl", log=lambda _line: None)
    predict(tiny_cvt_run / "export" / "onnx-int8", images=images, out=tmp_path / "onnx.jsonl", log=lambda _line: None)
    from_run, from_onnx = read_jsonl(tmp_path / "run.jsonl"), read_jsonl(tmp_path / "onnx.jsonl")
    assert [r["label"] for r in from_run] == [r["label"] for r in from_onnx]
    assert sum(r["label"] == Path(r["image"]).parent.name for r in from_run) >= 10   # of 12


def test_customize_a_cvt_run_with_lora_on_frozen_stages(tiny_cvt_run, tmp_path):
    done = run_cli(["customize", f"base={tiny_cvt_run}", "customize=[freeze,lora]", "customize.freeze.bottom=3",
                    "customize.lora.r=2", "trainer.max_steps=4", "report.latency=false", f"run_dir={tmp_path / 'c'}",
                    *TINY_CVT[1:]], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads((tmp_path / "c" / "manifest.json").read_text())["customizations"]
    assert [r["op"] for r in records] == ["freeze", "lora"]
    assert records[1]["targets"] == "projection_query,projection_key,projection_value,attention.output.dense"
    assert json.loads((tmp_path / "c" / "model" / "config.json").read_text())["model_type"] == "cvt"  # merged
