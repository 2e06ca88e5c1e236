"""Fixtures: an isolated fmctl cache and generated datasets shared by the session."""
from __future__ import annotations

import os
from pathlib import Path

# The suite has no GPU: Triton kernels run in its interpreter. It must be set before anything
# imports triton, and peft (test_customize) imports it on the way in.
os.environ["TRITON_INTERPRET"] = "1"

import pytest

from tests.helpers import write_reviews_csv, write_shapes_folder


def pytest_report_header(config):
    """The CPU's instruction set heads every test report: int8 and bf16 figures depend on it."""
    from fmctl import cpu

    return f"cpu: {cpu.summary()}"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Built-in datasets go to a per-session cache, not the user's home; no hub access."""
    os.environ["FMCTL_CACHE"] = str(tmp_path_factory.mktemp("fmctl-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


@pytest.fixture(scope="session")
def reviews(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reviews")
    return {"train": write_reviews_csv(root / "train.csv", 480, seed=1),
            "test": write_reviews_csv(root / "test.csv", 120, seed=2)}


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_folder(tmp_path_factory.mktemp("shapes") / "train", per_class=100, seed=3)


def _text_run(reviews, root: Path, backbone: str, steps: int) -> Path:
    from tests.helpers import TINY_TEXT, finetune

    return finetune("text_csv", [f"data.train={reviews['train']}", "data.text_column=Review Text",
                                 "data.label_column=sentiment", f"backbone={backbone}", *TINY_TEXT,
                                 f"trainer.max_steps={steps}", "trainer.batch_size=16", "optim.lr=2e-3"], root / "run").run_dir


@pytest.fixture(scope="session")
def tiny_bert_run(reviews, tmp_path_factory) -> Path:
    """A tiny BERT fine-tuned on the reviews: shared by the export and predict tests."""
    return _text_run(reviews, tmp_path_factory.mktemp("bert"), "bert", 60)


@pytest.fixture(scope="session")
def tiny_gpt_run(reviews, tmp_path_factory) -> Path:
    return _text_run(reviews, tmp_path_factory.mktemp("gpt"), "gpt", 40)


@pytest.fixture(scope="session")
def tiny_vit_run(shapes, tmp_path_factory) -> Path:
    from tests.helpers import TINY_VIT, finetune

    return finetune("image_folder", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=40", "trainer.batch_size=16",
                                     "optim.lr=2e-3"], tmp_path_factory.mktemp("vit") / "run").run_dir


@pytest.fixture(scope="session")
def tiny_onnx_exports(request) -> dict:
    """fp32 ONNX exports (default exporter) of the three tiny runs, made once per session:
    test_export checks them, test_predict serves them."""
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    return {name: export_run(request.getfixturevalue(f"tiny_{name}_run"), ExportOptions(fmt="onnx"),
                             log=lambda _line: None) for name in ("bert", "gpt", "vit")}
