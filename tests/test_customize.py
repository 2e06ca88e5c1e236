"""fmctl customize: operations over a trained model, the run folder they write, and the
report's numbers checked against what the saved model really holds. Tiny models, a few
steps, bases shared at module scope."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import TINY_TEXT, TINY_VIT, customize, finetune

TEXT = ["recipe=text_csv", "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT,
        "data.max_train_examples=160", "data.max_eval_examples=48", "trainer.batch_size=16", "optim.lr=3e-3"]
QUICK = ["trainer.max_steps=6", "report.repeats=1"]


@pytest.fixture(scope="module")
def bert_base(reviews, tmp_path_factory) -> Path:
    return finetune("text_csv", [*TEXT, f"data.train={reviews['train']}", "trainer.max_steps=25"],
                    tmp_path_factory.mktemp("cz-bert") / "run").run_dir


@pytest.fixture(scope="module")
def vit_base(tmp_path_factory) -> Path:
    from tests.helpers import write_shapes_folder

    images = write_shapes_folder(tmp_path_factory.mktemp("cz-shapes") / "train", per_class=24, seed=5)
    return finetune("image_folder", [f"data.train={images}", *TINY_VIT, "trainer.max_steps=8", "trainer.batch_size=16",
                                     "optim.lr=2e-3"], tmp_path_factory.mktemp("cz-vit") / "run").run_dir


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def real_counts(run_dir: Path, vision: bool = False) -> tuple[int, float]:
    """Parameter count and block-weight sparsity of model/ as fmctl's loader rebuilds it."""
    from fmctl.customize.report import sparsity

    if vision:
        from fmctl.models.vision import load_for_inference

        model = load_for_inference(run_dir / "model")
    else:
        from fmctl.models.text import load_for_inference

        model, _ = load_for_inference(run_dir / "model")
    return sum(p.numel() for p in model.parameters()), sparsity(model, "vit" if vision else "bert")["sparsity"]


def test_freeze_drop_layers_dropout_on_bert(bert_base, tmp_path):
    result = customize(bert_base, ["customize=[drop_layers,freeze,dropout]", "customize.drop_layers.keep=[1]",
                                   "customize.freeze.embeddings=true",
                                   "customize.freeze.params=['*encoder.layer.0.attention.*']",
                                   "customize.dropout.hidden=0.3", *QUICK], tmp_path / "run")
    run_dir = result.run_dir
    before, after = weights(bert_base), weights(run_dir)
    frozen = [k for k in after if k.startswith("bert.embeddings.") or ".layer.0.attention." in k]
    assert frozen
    for key in frozen:  # the kept block 1 is now block 0; frozen tensors are bit-identical
        assert torch.equal(after[key], before[key.replace(".layer.0.", ".layer.1.")]), key
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])  # the rest trained
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["hidden_dropout_prob"] == 0.3
    assert not any(".layer.1." in k for k in after)

    report = json.loads((run_dir / "customize_report.json").read_text())
    params, _ = real_counts(run_dir)
    assert report["customized"]["params_total"] == params < report["base"]["params_total"]
    assert report["customized"]["size_bytes"] == (run_dir / "model" / "model.safetensors").stat().st_size
    assert report["customized"]["latency_batch_32_ms"] > 0 and "val/accuracy" in report["base"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [c["op"] for c in manifest["customizations"]] == ["drop_layers", "freeze", "dropout"]
    assert manifest["customizations"][0]["params_after"] == params
    assert manifest["verb"] == "customize" and manifest["status"] == "completed"

    from fmctl import pipeline
    from fmctl.config.saved_runs import load_run_config

    raw, run = load_run_config(run_dir, [])
    evaluated = pipeline.evaluate_run(run_dir, run, raw, console=_quiet())
    assert evaluated["accuracy"] == pytest.approx(result.metrics["val/accuracy"])  # no test split: validation


def test_mlp_head_and_every_other_block_on_vit(vit_base, tmp_path):
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    result = customize(vit_base, ["customize=[head,drop_layers]", "customize.head.layers=2",
                                  "customize.head.hidden=32", "customize.head.activation=relu", *QUICK,
                                  "report.latency=false"], tmp_path / "run")
    run_dir = result.run_dir
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["model_args"]["depth"] == 1 and config["fmctl_head"]["layers"] == 2
    params, _ = real_counts(run_dir, vision=True)
    report = json.loads((run_dir / "customize_report.json").read_text())
    assert report["customized"]["params_total"] == params
    assert "latency_batch_1_ms" not in report["customized"]
    # the reloaded model gives the validation accuracy training reported for it
    exported = export_run(run_dir, ExportOptions(fmt="hf"), log=lambda _line: None)
    assert exported.manifest["parity"]["max_abs_diff"] < 1e-5
    weights = export_run(run_dir, ExportOptions(fmt="safetensors"), log=lambda _line: None)
    assert weights.manifest["parity"]["max_abs_diff"] < 1e-5  # rebuilt as the manifest says, MLP head included
    # customising that run again starts from its MLP head, not from a fresh linear one
    again = customize(run_dir, ["customize=[dropout]", "customize.dropout.hidden=0.0", *QUICK,
                                "report.latency=false"], tmp_path / "again")
    assert again.report["base"]["val/loss"] == pytest.approx(result.metrics["val/loss"], abs=1e-6)


def _quiet():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))


def _tiny(family: str):
    """A tiny random model of each family, as fmctl builds them."""
    if family == "vit":
        import timm

        return timm.create_model("vit_base_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=32,
                                 depth=2, num_heads=2, num_classes=3)
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

    if family == "bert":
        return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                        num_attention_heads=2, intermediate_size=64, num_labels=3))
    return GPT2ForSequenceClassification(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, num_labels=3,
                                                    pad_token_id=0, bos_token_id=1, eos_token_id=1))


def _inputs(family: str):
    torch.manual_seed(0)
    if family == "vit":
        return (torch.randn(4, 3, 16, 16),), {}
    return (), {"input_ids": torch.randint(2, 50, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long)}


def _logits(model, family):
    args, kwargs = _inputs(family)
    with torch.no_grad():
        out = model.eval()(*args, **kwargs)
    return out if family == "vit" else out.logits


def _lora_ctx(family: str, base: str | None = None):
    from types import SimpleNamespace

    from fmctl.customize import Context

    run = SimpleNamespace(backbone=SimpleNamespace(name=family), base=base)
    return Context(run=run, task=None, data=SimpleNamespace(label_names=["a", "b", "c"]))


@pytest.mark.parametrize("family", ["bert", "gpt", "vit"])
def test_lora_trains_only_adapters_and_head_and_merges_to_the_same_function(family):
    from fmctl.config.schema import LoraOp
    from fmctl.customize import lora

    torch.manual_seed(0)
    ctx = _lora_ctx(family)
    model, details = lora.apply(_tiny(family), LoraOp(r=4), ctx)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    heads = {"bert": ("classifier", "pooler"), "gpt": ("score",), "vit": ("head",)}[family]
    assert trainable and all("lora_" in n or any(f".{h}." in n for h in heads) for n in trainable), trainable
    assert any("lora_" in n for n in trainable) and any("modules_to_save" in n for n in trainable)
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    unmerged = _logits(model, family)
    merged = ctx.finalizers[0](model, None)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, family), unmerged, atol=1e-5)


def test_lora_adapter_save_reload_gives_identical_logits(tmp_path):
    from types import SimpleNamespace

    from fmctl.config.schema import LoraOp
    from fmctl.customize import lora
    from fmctl.models.text import load_for_inference

    torch.manual_seed(0)
    base = _tiny("bert")
    base.config.id2label = {0: "a", 1: "b", 2: "c"}
    base.save_pretrained(tmp_path / "base")
    ctx = _lora_ctx("bert", str(tmp_path / "base"))
    ctx.task = SimpleNamespace(name="text_classification", load_model=lambda folder: load_for_inference(folder)[0])
    model, _ = lora.apply(load_for_inference(tmp_path / "base")[0], LoraOp(r=4, merge=False), ctx)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)  # adapters and head "trained"
    before = _logits(model, "bert")
    merged = ctx.finalizers[0](model, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "adapter" / "fmctl_adapter.json").read_text())
    assert meta["base"] == str((tmp_path / "base").resolve())   # same labels, nothing changed before LoRA
    reloaded = lora.load_adapter_model(tmp_path / "run" / "adapter", ctx.task)
    assert torch.equal(_logits(reloaded, "bert"), before)
    assert torch.allclose(_logits(merged, "bert"), before, atol=1e-5)


def test_lora_run_keeps_an_adapter_that_eval_loads(bert_base, tmp_path):
    from fmctl import pipeline
    from fmctl.config.saved_runs import load_run_config

    result = customize(bert_base, ["customize=[head,lora]", "customize.head.reinit=true", "customize.lora.r=4",
                                   "customize.lora.merge=false", *QUICK, "report.latency=false"], tmp_path / "run")
    run_dir = result.run_dir
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "adapter" / "fmctl_adapter.json").read_text())["base"] == "base"  # head changed
    assert not any("lora_" in k for k in weights(run_dir))  # model/ is the merged, plain model
    raw, run = load_run_config(run_dir, [])
    evaluated = pipeline.evaluate_run(run_dir, run, raw, console=_quiet())
    assert evaluated["loss"] == pytest.approx(result.metrics["val/loss"], abs=1e-6)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    lora_step = manifest["customizations"][1]
    assert lora_step["trainable_after"] < lora_step["trainable_before"] / 10
    # the model as it trained: the base (its head once, not peft's frozen copy too) and the adapters
    params, _ = real_counts(run_dir)
    assert manifest["parameters"]["total"] == params + lora_step["adapter_params"] == lora_step["params_after"]
    report = json.loads((run_dir / "customize_report.json").read_text())
    assert report["customized"]["params_trainable"] == lora_step["trainable_after"]
    assert report["customized"]["adapter_size_bytes"] < report["customized"]["size_bytes"] * 3  # adapter + its base


def test_prune_and_distill_run_reports_what_model_holds(bert_base, tmp_path):
    from transformers import AutoModelForSequenceClassification

    result = customize(bert_base, ["customize=[prune,distill]", "customize.prune.sparsity=0.6",
                                   "customize.prune.ffn=0.5", "customize.prune.heads=0.5",
                                   f"customize.distill.teacher={bert_base}", "customize.distill.temperature=3",
                                   *QUICK, "report.latency=false"], tmp_path / "run")
    run_dir = result.run_dir
    params, real_sparsity = real_counts(run_dir)  # model/ as transformers reloads it: masks are gone
    assert not any(k.endswith(("_mask", "_orig")) for k in weights(run_dir))
    # feed-forward channels are gone from the weights and the config: transformers alone rebuilds the smaller model
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["intermediate_size"] == json.loads((bert_base / "model" / "config.json").read_text())[
        "intermediate_size"] // 2
    _, info = AutoModelForSequenceClassification.from_pretrained(run_dir / "model", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    report = json.loads((run_dir / "customize_report.json").read_text())
    base, custom = report["base"], report["customized"]
    assert custom["params_total"] == params < base["params_total"]
    assert custom["flops_batch_32"] < base["flops_batch_32"] and custom["flops_batch_1"] < base["flops_batch_1"]
    assert custom["sparsity"] == pytest.approx(real_sparsity, abs=1e-6)
    assert real_sparsity >= 0.6  # the target, plus the silenced heads
    ops = {c["op"]: c for c in json.loads((run_dir / "manifest.json").read_text())["customizations"]}
    assert ops["prune"]["heads_zeroed"] == 2 and ops["distill"]["temperature"] == 3.0
    assert ops["prune"]["params_after"] == params  # zeros keep their place, removed channels do not


def test_prune_then_lora_adapts_the_smaller_vit_and_eval_loads_its_adapter(vit_base, tmp_path):
    import timm

    from fmctl import pipeline
    from fmctl.config.saved_runs import load_run_config

    result = customize(vit_base, ["customize=[prune,lora]", "customize.prune.ffn=0.5", "customize.prune.sparsity=0",
                                  "customize.lora.merge=false", *QUICK], tmp_path / "run")
    run_dir = result.run_dir
    base_args = json.loads((vit_base / "model" / "config.json").read_text())["model_args"]
    args = json.loads((run_dir / "model" / "config.json").read_text())["model_args"]
    assert args["mlp_ratio"] == pytest.approx(base_args.get("mlp_ratio", 4.0) / 2)
    model = timm.create_model(f"local-dir:{run_dir / 'model'}", pretrained=True)  # timm alone
    assert sum(p.numel() for p in model.parameters()) == result.report["customized"]["params_total"]
    base, custom = result.report["base"], result.report["customized"]
    assert custom["params_total"] < base["params_total"] and custom["flops_batch_32"] < base["flops_batch_32"]
    assert custom["latency_batch_1_ms"] > 0 and base["latency_batch_32_ms"] > 0  # measured, not compared
    raw, run = load_run_config(run_dir, [])
    evaluated = pipeline.evaluate_run(run_dir, run, raw, console=_quiet())  # pruned base + adapter
    assert evaluated["loss"] == pytest.approx(result.metrics["val/loss"], abs=1e-5)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_pruning_hits_the_target_and_masks_hold(scope):
    from types import SimpleNamespace

    from fmctl.backbones import structure_of
    from fmctl.config.schema import PruneOp
    from fmctl.customize import Context, prune
    from fmctl.customize.report import sparsity

    torch.manual_seed(0)
    ctx = Context(run=SimpleNamespace(backbone=SimpleNamespace(name="vit")), task=None, data=None)
    model, details = prune.apply(_tiny("vit"), PruneOp(sparsity=0.3, scope=scope), ctx)
    weights_ = [m.weight for _, m in prune.prunable(model, structure_of(model, "vit"))]
    if scope == "layer":
        assert all(abs(float((w == 0).float().mean()) - 0.3) < 0.01 for w in weights_)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()  # pruned weights stay zero through an update
    model = ctx.finalizers[0](model, None)
    assert sparsity(model, "vit")["sparsity"] == pytest.approx(0.3, abs=0.01) == details["sparsity"]


@pytest.mark.parametrize("family", ["bert", "gpt", "vit"])
def test_head_pruning_silences_the_least_important_heads(family):
    from types import SimpleNamespace

    from fmctl.backbones import structure_of
    from fmctl.config.schema import PruneOp
    from fmctl.customize import Context, prune

    torch.manual_seed(0)
    model = _tiny(family)
    ctx = Context(run=SimpleNamespace(backbone=SimpleNamespace(name=family)), task=None, data=None)
    model, details = prune.apply(model, PruneOp(sparsity=0.0, heads=0.5), ctx)
    model = ctx.finalizers[0](model, None)
    assert details["heads_zeroed"] == 2  # one of two heads in each of two blocks
    out_proj = {"bert": lambda b: b.attention.output.dense.weight, "gpt": lambda b: b.attn.c_proj.weight.T,
                "vit": lambda b: b.attn.proj.weight}[family]
    (stack,) = structure_of(model, family).stacks
    blocks = model.get_submodule(stack)
    for block in blocks:  # the output projection reads nothing from the removed head's 16 channels
        zero_columns = (out_proj(block) == 0).all(dim=0)
        assert int(zero_columns.sum()) == 16


def _reload_with_library_alone(model, family: str, folder: Path):
    """model/ as transformers or timm rebuild it from the saved config, without fmctl."""
    if family == "vit":
        import timm

        from fmctl.models.vision import save

        save(model, folder, ["a", "b", "c"])
        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    from transformers import AutoModelForSequenceClassification

    model.save_pretrained(folder)
    return AutoModelForSequenceClassification.from_pretrained(folder)


@pytest.mark.parametrize("family", ["bert", "gpt", "vit"])
def test_ffn_pruning_removes_channels_and_the_library_reloads_the_smaller_model(family, tmp_path):
    import copy
    from operator import attrgetter

    from fmctl.backbones import structure_of
    from fmctl.customize.channels import remove_ffn_channels
    from fmctl.customize.flops import forward_flops

    torch.manual_seed(0)
    model = _tiny(family)
    reference = copy.deepcopy(model)
    structure = structure_of(model, family)
    removed = remove_ffn_channels(model, structure, 0.5)
    assert removed["widths"] == {"": (64 if family == "bert" else 128, 32 if family == "bert" else 64)}
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in reference.parameters())
    flops = [forward_flops(lambda m=m: _logits(m, family)) for m in (model, reference)]
    assert flops[0] < flops[1]
    for name, kept in removed["kept"].items():  # the same function as the full model without those channels
        reduce = attrgetter(structure.ffn_layout.reduce)(reference.get_submodule(name))
        gone = torch.ones(reduce.weight.shape[0 if family == "gpt" else 1], dtype=torch.bool)
        gone[kept] = False
        with torch.no_grad():  # GPT-2's Conv1D holds (in, out)
            if family == "gpt":
                reduce.weight[gone] = 0
            else:
                reduce.weight[:, gone] = 0
    assert torch.allclose(_logits(model, family), _logits(reference, family), atol=1e-6)
    reloaded = _reload_with_library_alone(model, family, tmp_path / "model")
    assert torch.equal(_logits(reloaded, family), _logits(model, family))


def _tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_decoder_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0))


def _t5_logits(model):
    torch.manual_seed(1)
    source, target = torch.randint(2, 50, (3, 11)), torch.randint(2, 50, (3, 7))
    with torch.no_grad():
        return model.eval()(input_ids=source, attention_mask=torch.ones_like(source), decoder_input_ids=target).logits


def test_t5_head_pruning_removes_heads_and_transformers_reloads_the_smaller_model(tmp_path):
    """T5's config records heads (num_heads) apart from their width (d_kv): heads go, and
    the model computes what the full one computes with those heads' outputs zeroed."""
    import copy

    from transformers import T5ForConditionalGeneration

    from fmctl.backbones import structure_of
    from fmctl.customize.flops import forward_flops
    from fmctl.customize.heads import remove_heads

    model = _tiny_t5()
    with torch.no_grad():  # heads of unequal importance, so the choice matters
        for name, param in model.named_parameters():
            if name.endswith(("SelfAttention.o.weight", "EncDecAttention.o.weight")):
                param.mul_(torch.linspace(0.2, 3.0, param.shape[1]))
    reference = copy.deepcopy(model)
    removed = remove_heads(model, structure_of(model, "t5"), 0.5)
    assert removed["counts"] == {"": (4, 2)} and model.config.num_heads == 2
    assert removed["removed"] == 2 * (2 + 2 + 2)  # encoder self, decoder self, decoder cross: 6 modules
    kept = removed["kept"]
    # self-attention keeps the same heads through a stack: block 0's relative bias serves all
    assert kept["encoder.block.0.layer.0.SelfAttention"] == kept["encoder.block.1.layer.0.SelfAttention"]
    assert kept["decoder.block.0.layer.0.SelfAttention"] == kept["decoder.block.1.layer.0.SelfAttention"]
    assert kept["decoder.block.1.layer.1.EncDecAttention"] == [2, 3]  # the scaled-up heads win
    assert model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (32, 2)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in reference.parameters())
    flops = [forward_flops(lambda m=m: _t5_logits(m)) for m in (model, reference)]
    assert flops[0] < flops[1]
    for name, heads in kept.items():  # zero the removed heads' output columns in the full model
        attention = reference.get_submodule(name)
        gone = torch.ones(4, dtype=torch.bool)
        gone[heads] = False
        with torch.no_grad():
            attention.o.weight.view(32, 4, 8)[:, gone] = 0
    assert torch.allclose(_t5_logits(model), _t5_logits(reference), atol=1e-5)
    model.save_pretrained(tmp_path / "model")
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert reloaded.config.num_heads == 2 and reloaded.config.d_kv == 8
    assert torch.equal(_t5_logits(reloaded), _t5_logits(model))


def test_t5_ffn_pruning_removes_channels_of_encoder_and_decoder_blocks(tmp_path):
    """T5's feed-forward is the last layer of a block (1 in the encoder, 2 in the
    decoder): both shrink, d_ff records the width, transformers reloads the smaller model."""
    import copy

    from transformers import T5ForConditionalGeneration

    from fmctl.backbones import structure_of
    from fmctl.customize.channels import remove_ffn_channels

    model = _tiny_t5()
    reference = copy.deepcopy(model)
    removed = remove_ffn_channels(model, structure_of(model, "t5"), 0.5)
    assert removed["widths"] == {"": (64, 32)} and model.config.d_ff == 32
    assert set(removed["kept"]) == {f"{s}.block.{i}" for s in ("encoder", "decoder") for i in (0, 1)}
    for name, kept in removed["kept"].items():
        wo = reference.get_submodule(name).layer[-1].DenseReluDense.wo
        gone = torch.ones(64, dtype=torch.bool)
        gone[kept] = False
        with torch.no_grad():
            wo.weight[:, gone] = 0
    assert torch.allclose(_t5_logits(model), _t5_logits(reference), atol=1e-5)
    model.save_pretrained(tmp_path / "model")
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert reloaded.config.d_ff == 32 and torch.equal(_t5_logits(reloaded), _t5_logits(model))


def test_t5_head_pruning_then_lora_merges_to_the_same_function():
    from fmctl.config.schema import LoraOp, PruneOp
    from fmctl.customize import lora, prune

    ctx = _lora_ctx("t5")
    model, details = prune.apply(_tiny_t5(), PruneOp(sparsity=0.0, heads=0.25), ctx)
    assert details == {"heads": "4 -> 3", "heads_removed": 6}  # nothing zeroed, so no masks
    model, _ = lora.apply(model, LoraOp(r=4, target_modules=["q", "v"]), ctx)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    unmerged = _t5_logits(model)
    merged = ctx.finalizers[0](model, None)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_t5_logits(merged), unmerged, atol=1e-5)


def test_ffn_pruning_refuses_a_model_its_config_would_not_rebuild():
    import timm

    from fmctl.backbones import structure_of
    from fmctl.customize.channels import remove_ffn_channels
    from fmctl.errors import ConfigError

    model = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=32,
                              depth=2, num_heads=2, num_classes=3, global_pool="map")  # mlp_ratio also sizes its pool
    with pytest.raises(ConfigError, match=r"would get attn_pool\.mlp\.fc1\.weight of shape \(64, 32\), not "
                                          r"\(128, 32\)"):
        remove_ffn_channels(model, structure_of(model, "vit"), 0.5)


@pytest.mark.parametrize("family", ["bert", "gpt", "vit"])
def test_lora_on_a_structurally_pruned_model_merges_to_the_same_function(family):
    from fmctl.config.schema import LoraOp, PruneOp
    from fmctl.customize import lora, prune

    torch.manual_seed(0)
    ctx = _lora_ctx(family)
    model, details = prune.apply(_tiny(family), PruneOp(sparsity=0.0, ffn=0.25), ctx)
    assert details["ffn_width"] == ("64 -> 48" if family == "bert" else "128 -> 96")
    ffn = {"bert": "intermediate.dense", "gpt": "mlp.c_fc", "vit": "mlp.fc1"}[family]
    model, _ = lora.apply(model, LoraOp(r=4, target_modules=[ffn]), ctx)  # the pruned layer itself
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    unmerged = _logits(model, family)
    assert len(ctx.finalizers) == 1  # structural pruning leaves no masks to remove; LoRA's merge
    merged = ctx.finalizers[0](model, None)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, family), unmerged, atol=1e-5)


def test_distillation_loss_pulls_student_logits_toward_the_teacher():
    from fmctl.customize.distill import DistillLoss

    torch.manual_seed(0)
    teacher = torch.nn.Linear(8, 4)
    task = type("T", (), {"forward": staticmethod(lambda model, batch: model(batch["x"]))})()
    hook = DistillLoss(teacher, task, alpha=1.0, temperature=2.0)
    batch = {"x": torch.randn(16, 8)}
    student = torch.nn.Parameter(torch.randn(16, 4))
    with torch.no_grad():
        target = teacher(batch["x"])
    gaps = []
    for _ in range(40):
        loss = hook(torch.zeros(()), student, batch)
        gaps.append(float(hook.kd(student.detach(), target)))
        (grad,) = torch.autograd.grad(loss, student)
        with torch.no_grad():
            student -= 8.0 * grad
    assert all(b < a for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 0.05 * gaps[0]
    mixed = DistillLoss(teacher, task, alpha=0.25, temperature=2.0)(torch.tensor(4.0), student, batch)
    assert float(mixed.detach()) == pytest.approx(0.75 * 4.0 + 0.25 * float(hook.kd(student.detach(), target)), rel=1e-5)


def test_layer_decay_and_head_lr_multiplier_set_group_learning_rates():
    from fmctl.backbones import structure_of
    from fmctl.loop.optim import parameter_groups

    model = _tiny("bert")  # 2 blocks
    groups = parameter_groups(model, structure_of(model, "bert"), 0.01, lr=1.0, layer_decay=0.5, head_lr_mult=10.0)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == 0.125
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.25
    assert lr_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == 0.5
    assert lr_of[id(named["classifier.weight"])] == 10.0
    assert groups[0]["lr"] == 1.0 or groups[0]["lr"] == 0.5  # the group nearest optim.lr first
    assert len(lr_of) == len(named)


def test_ema_weights_are_evaluated_saved_and_resumed_exactly(reviews, tmp_path):
    """Constant LR, so a run stopped at step 4 and resumed to 8 equals a run of 8; EMA
    shadows live in the checkpoint; model/ holds the averaged (best) weights."""
    from fmctl.loop.state import load_state

    common = [*TEXT, f"data.train={reviews['train']}", "trainer.ema.decay=0.8", "sched=constant",
              "sched.warmup_steps=0", "trainer.eval_every=4", "trainer.checkpoint_every=4", "trainer.log_every=1", "trainer.keep_last=2"]
    whole = finetune("text_csv", [*common, "trainer.max_steps=8"], tmp_path / "whole")
    finetune("text_csv", [*common, "trainer.max_steps=4"], tmp_path / "parts")
    parts = finetune("text_csv", [*common, "trainer.max_steps=8", "trainer.resume=auto"], tmp_path / "parts")
    a = load_state(whole.run_dir / "checkpoints" / "step_00000008" / "state.pt")
    b = load_state(parts.run_dir / "checkpoints" / "step_00000008" / "state.pt")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 8
    assert all(torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]) for k in a["ema"]["shadow"])
    wa, wb = weights(whole.run_dir), weights(parts.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    best = load_file(str(whole.run_dir / "checkpoints" / "best" / "model.safetensors"))
    assert all(torch.equal(wa[k], best[k]) for k in wa)  # model/ is the best checkpoint ...
    at_best = f"step_{whole.fit.best_step:08d}"
    step = load_file(str(whole.run_dir / "checkpoints" / at_best / "model.safetensors"))
    shadow = load_state(whole.run_dir / "checkpoints" / at_best / "state.pt")["ema"]["shadow"]
    assert all(torch.equal(best[k], shadow[k]) for k in shadow)  # ... which holds the averaged weights
    assert not all(torch.equal(step[k], shadow[k]) for k in shadow)  # not the raw ones


def test_optuna_sweep_ranks_trials_and_survives_a_failing_one(bert_base, tmp_path):
    """Hydra's Optuna sweeper over `fmctl customize`: the grid sampler makes the three
    trials deterministic; max_steps=0 fails validation inside its job."""
    from tests.helpers import run_cli

    sweep = tmp_path / "sweep"
    done = run_cli(["customize", f"base={bert_base}", "customize=[freeze]", "customize.freeze.embeddings=true",
                    "report.latency=false", "data.max_eval_examples=32", "-m", "hydra/sweeper=optuna",
                    "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "trainer.max_steps=choice(2,0,3)",
                    f"run_dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]  # finished, but one trial failed
    summary = json.loads((sweep / "summary.json").read_text())
    assert sorted(row["status"] for row in summary) == ["completed", "completed", "failed"]
    failed = next(row for row in summary if row["status"] == "failed")
    assert "trainer.max_steps: must be > 0" in failed["error"]
    ranked = sorted((row for row in summary if "rank" in row), key=lambda row: row["rank"])
    assert [row["rank"] for row in ranked] == [1, 2]
    assert ranked[0]["objective"]["value"] >= ranked[1]["objective"]["value"]  # accuracy: maximize
    assert ranked[0]["objective"]["metric"] == "val/accuracy"
    results = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in results and "best trial: job" in done.stdout


def test_operation_lists_compose_in_order_with_settings_inline_or_dotted(tmp_path):
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.validate import validate
    from fmctl.errors import ConfigError

    checked = preflight(parse_invocation([
        "recipe=text_csv", "data.train=x.csv", "base=somewhere",
        "customize=[head,{op:freeze,params:['*LayerNorm*'],bottom:1},lora]", "customize.lora.r=2"]))
    run = validate(checked.config)
    assert [s.op for s in run.customize] == ["head", "freeze", "lora"]
    assert run.customize[1].cfg.params == ["*LayerNorm*"] and run.customize[1].cfg.bottom == 1
    assert run.customize[2].cfg.r == 2 and run.customize[2].cfg.alpha == 16  # conf/customize defaults
    plain = {k: v for k, v in dict(checked.config).items() if k != "customize"}
    with pytest.raises(ConfigError) as caught:  # the list form reports positions
        validate({**plain, "customize": ["head", {"op": "prune", "sparsity": 1.5}, {"op": "lorra"}]})
    assert "customize[1].sparsity: must be < 1.0, got 1.5" in caught.value.problems
    assert any(p.startswith("customize[2]: unknown operation 'lorra' (did you mean 'lora'?)")
               for p in caught.value.problems)


def test_prune_goes_with_lora_when_it_comes_first_and_only_removes_channels():
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.validate import validate
    from fmctl.errors import ConfigError

    def problems(*ops: str, recipe: str = "text_csv") -> list[str]:
        try:
            validate(preflight(parse_invocation([f"recipe={recipe}", "data.train=x.csv", "base=somewhere",
                                                 *ops])).config)
        except ConfigError as error:
            return error.problems
        return []

    assert problems("customize=[prune,lora]", "customize.prune.ffn=0.5", "customize.prune.sparsity=0") == []
    assert problems("customize=[prune,lora]", "customize.prune.ffn=0.5") == [  # sparsity's default is 0.5
        "customize.prune.sparsity: 0.5 sets weights to zero that merging the lora adapter would fill back in; with "
        "lora prune structurally (customize.prune.ffn) and set customize.prune.sparsity=0"]
    assert problems("customize=[lora,prune]", "customize.prune.sparsity=0", "customize.prune.heads=0.5") == [
        "customize.prune.heads: 0.5 sets weights to zero that merging the lora adapter would fill back in; with "
        "lora prune structurally (customize.prune.ffn) and set customize.prune.heads=0",
        "customize: list prune before lora (LoRA then adapts the pruned model; after it, pruning would cut the "
        "adapter's own matrices)"]
    assert problems("customize=[prune]", "customize.prune.sparsity=0") == [
        "customize.prune: nothing to prune; set sparsity, ffn or heads above 0"]
    assert problems("customize=[head]", recipe="translation_t5") == [
        "customize.head: task 'translation' has no task head over the backbone to re-initialise or replace (its "
        "output layer is the model's own); drop head from customize"]
    # T5's heads are removed, not zeroed: they go with lora
    assert problems("customize=[prune,lora]", "customize.prune.heads=0.5", "customize.prune.sparsity=0",
                    recipe="translation_t5") == []


def test_a_student_distilled_from_a_better_teacher_beats_the_same_student_alone():
    """Generated task: the label is x0 + x1 > 0, but the training labels are wrong wherever
    x0 > 0.3; the teacher knows the rule. Same student, same steps, with and without it."""
    from fmctl.customize.distill import DistillLoss

    def data(n):
        x = torch.randn(n, 2)
        return x, (x[:, 0] + x[:, 1] > 0).long()

    torch.manual_seed(0)
    x, y = data(64)
    noisy = y.clone()
    noisy[x[:, 0] > 0.3] = 0
    test_x, test_y = data(2000)
    teacher = torch.nn.Linear(2, 2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[-3.0, -3.0], [3.0, 3.0]]))
        teacher.bias.zero_()
    task = type("T", (), {"forward": staticmethod(lambda model, batch: model(batch["x"]))})()

    def accuracy(alpha: float) -> float:
        torch.manual_seed(1)
        student = torch.nn.Linear(2, 2)
        optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
        hook = DistillLoss(teacher, task, alpha=alpha, temperature=2.0)
        for _ in range(150):
            logits = student(x)
            loss = hook(torch.nn.functional.cross_entropy(logits, noisy), logits, {"x": x})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return float((student(test_x).argmax(-1) == test_y).float().mean())

    alone, distilled = accuracy(0.0), accuracy(0.8)
    assert distilled > 0.9 and distilled > alone + 0.2, (alone, distilled)
