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

from tests.helpers import TINY_TEXT, TINY_VIT, finetune

TEXT = ["recipe=text_csv", "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT,
        "data.max_train_examples=160", "data.max_eval_examples=48", "trainer.batch_size=16", "optim.lr=3e-3"]
QUICK = ["trainer.max_steps=6", "report.repeats=1"]


def customize(base: Path, overrides: list[str], run_dir: Path):
    """`fmctl customize base=... overrides` in-process, as the CLI composes it."""
    from rich.console import Console

    from fmctl import pipeline
    from fmctl.config.compose import customize_invocation, parse_invocation, preflight
    from fmctl.config.validate import validate

    args = customize_invocation([f"base={base}", *overrides, f"run_dir={run_dir}"])
    checked = preflight(parse_invocation(args, "customize_bert_lora"))
    return pipeline.customize(validate(checked.config), checked.config, console=Console(file=open(os.devnull, "w")))


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
    return sum(p.numel() for p in model.parameters()), sparsity(model)["sparsity"]


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
    from fmctl.config.compose import load_run_config

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


def _quiet():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))
