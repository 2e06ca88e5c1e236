"""Triton kernels against float64 PyTorch references, forward and backward, on awkward
shapes (no dimension a multiple of a block), for fp32 and bf16 inputs. They run on the
CPU through Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported).

Tolerances: fp32 inputs must agree to 1e-4 relative; bf16 inputs carry 8 bits of
mantissa, so their results are checked to 2e-2 relative (of the largest magnitude)."""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from fmctl.kernels import choose  # noqa: E402
from fmctl.kernels.bias_gelu import fused_bias_gelu  # noqa: E402
from fmctl.kernels.cross_entropy import fused_linear_cross_entropy  # noqa: E402
from fmctl.kernels.layernorm import FusedLayerNorm, fused_layer_norm, patch_layer_norms  # noqa: E402

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def close(actual, expected, dtype, what):
    scale = expected.abs().max().item() or 1.0
    error = (actual.double() - expected).abs().max().item() / scale
    assert error < TOLERANCE[dtype], f"{what}: relative error {error:.2e} ({dtype})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing, with_bias", [(0.0, False), (0.1, True)])
def test_fused_linear_cross_entropy(dtype, smoothing, with_bias):
    g = torch.Generator().manual_seed(0)
    rows, width, vocab = 37, 19, 1500        # vocab spans two 1024-wide blocks; rows three chunks of 16
    hidden = torch.randn(rows, width, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, width, generator=g) * 0.3).to(dtype).requires_grad_()
    bias = (torch.randn(vocab, generator=g) * 0.1).to(dtype).requires_grad_() if with_bias else None
    targets = torch.randint(0, vocab, (rows,), generator=g)
    targets[[3, 17, 30]] = -100
    loss = fused_linear_cross_entropy(hidden, weight, targets, bias=bias, label_smoothing=smoothing, chunk=16)
    (loss * 2.5).backward()

    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_() if with_bias else None
    reference = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h64, w64, b64), targets,
                                                  ignore_index=-100, label_smoothing=smoothing)
    (reference * 2.5).backward()
    close(loss.detach(), reference.detach(), dtype, "loss")
    close(hidden.grad, h64.grad, dtype, "d hidden")
    close(weight.grad, w64.grad, dtype, "d weight")
    assert hidden.grad[[3, 17, 30]].abs().max() == 0  # ignored rows get no gradient
    if with_bias:
        close(bias.grad, b64.grad, dtype, "d bias")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_layer_norm(dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 7, 37, generator=g) * 2 + 0.5).to(dtype).requires_grad_()
    w = (1 + 0.1 * torch.randn(37, generator=g)).to(dtype).requires_grad_()
    b = (0.1 * torch.randn(37, generator=g)).to(dtype).requires_grad_()
    dy = torch.randn(3, 7, 37, generator=g).to(dtype)
    y = fused_layer_norm(x, w, b, 1e-5)
    y.backward(dy)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = torch.nn.functional.layer_norm(x64, (37,), w64, b64, 1e-5)
    ref.backward(dy.double())
    assert y.dtype == dtype
    close(y.detach(), ref.detach(), dtype, "y")
    close(x.grad, x64.grad, dtype, "dx")
    close(w.grad, w64.grad, dtype, "dw")
    close(b.grad, b64.grad, dtype, "db")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_bias_gelu(dtype, approximate):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 43, generator=g) * 3).to(dtype).requires_grad_()
    b = torch.randn(43, generator=g).to(dtype).requires_grad_()
    dy = torch.randn(5, 43, generator=g).to(dtype)
    y = fused_bias_gelu(x, b, approximate)
    y.backward(dy)
    x64, b64 = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ref = torch.nn.functional.gelu(x64 + b64, approximate=approximate)
    ref.backward(dy.double())
    close(y.detach(), ref.detach(), dtype, "y")
    close(x.grad, x64.grad, dtype, "dx")
    close(b.grad, b64.grad, dtype, "db")


def test_patched_layer_norm_keeps_parameters_and_outputs():
    model = torch.nn.Sequential(torch.nn.Linear(11, 13), torch.nn.LayerNorm(13), torch.nn.GELU(), torch.nn.LayerNorm(13))
    x = torch.randn(4, 11)
    before = model(x).detach()
    keys = list(model.state_dict())
    assert patch_layer_norms(model) == 2
    assert isinstance(model[1], FusedLayerNorm) and list(model.state_dict()) == keys
    assert torch.allclose(model(x), before, atol=1e-5)


def test_kernel_choice(monkeypatch):
    from fmctl.errors import ConfigError

    assert choose("auto", "cpu") == "torch" and choose("torch", "cuda") == "torch"
    assert choose("triton", "cpu") == "triton"  # the interpreter is on in this module
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ConfigError, match="needs the triton package and a CUDA device"):
        choose("triton", "cpu")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from rich.console import Console

    from fmctl.config.compose import schema_from_overrides
    from fmctl.config.prepare_schema import PrepareConfig
    from fmctl.data.prepare import prepare_corpus
    from tests.test_pretrain import structured_corpus

    root = tmp_path_factory.mktemp("kernels")
    corpus = structured_corpus(root / "corpus.txt", n=300)
    return {kind: prepare_corpus(schema_from_overrides(PrepareConfig, [
        f"input={corpus}", f"out={root / kind}", f"tokenizer.kind={kind}", "tokenizer.vocab_size=300",
        "dedup.near=false", "validation_fraction=0.05"]), Console(quiet=True)).out for kind in ("wordpiece", "bpe")}


@pytest.mark.parametrize("recipe, kind", [("gpt_clm", "bpe"), ("bert_mlm", "wordpiece")])
def test_pretraining_with_triton_kernels_matches_torch(corpora, tmp_path, recipe, kind):
    """The same 3 steps with kernels=triton (fused LM loss, LayerNorm, bias+GELU) and with
    kernels=torch give the same losses and nearly the same weights."""
    import json

    from rich.console import Console
    from safetensors.torch import load_file

    from fmctl import pipeline
    from tests.helpers import compose, read_jsonl

    runs = {}
    for kernels in ("triton", "torch"):
        raw, run = compose(recipe, [f"data.prepared={corpora[kind]}", "backbone.hidden_size=32", "backbone.num_layers=1",
                                    "backbone.num_heads=2", "data.max_length=16", "trainer.batch_size=4",
                                    "trainer.max_steps=3", "trainer.log_every=1", "trainer.eval_every=100",
                                    "trainer.progress=off", "trainer.precision=fp32", "trainer.num_threads=1",
                                    "backbone.dropout=0", f"trainer.kernels={kernels}"], tmp_path / kernels)
        runs[kernels] = pipeline.pretrain(run, raw, console=Console(quiet=True))
    losses = {k: [r["loss"] for r in read_jsonl(r.run_dir / "metrics.jsonl") if r["event"] == "train"]
              for k, r in runs.items()}
    assert losses["triton"] == pytest.approx(losses["torch"], rel=1e-4)
    a = load_file(str(runs["triton"].run_dir / "model" / "model.safetensors"))
    b = load_file(str(runs["torch"].run_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert json.loads((runs["triton"].run_dir / "manifest.json").read_text())["kernels"] == "triton"
