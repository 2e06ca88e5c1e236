"""`fmctl export`: artefacts that compute what PyTorch computes, proven on real validation
data, described by a manifest that matches the file, and never left behind when broken."""
import json
import subprocess
import sys

import numpy as np
import pytest

from fmctl.errors import ExportError
from fmctl.export.run import export_run
from fmctl.export.io import ExportIO
from fmctl.export.writers import ExportOptions

FP32_ATOL = 1e-4
INT8_MIN_AGREEMENT = 0.95   # stated threshold: int8 keeps >= 95% of PyTorch's labels


def quiet(_line):
    pass


def run_of(request, name):
    return request.getfixturevalue(f"tiny_{name}_run")


def torch_and_inputs(run_dir):
    """PyTorch logits and the real validation inputs, computed here, not read from the manifest."""
    import torch

    from fmctl.config.saved_runs import load_run_config

    _, run = load_run_config(run_dir, [])
    io = ExportIO(run, run_dir)
    module = io.module(io.load_model())
    out = []
    for batch in io.batches(32):
        with torch.no_grad():
            logits = module(*[batch.inputs[n] for n in io.input_names()]).numpy()
        out.append(({n: batch.inputs[n].numpy() for n in io.input_names()}, logits, batch.labels.numpy()))
    return io, out


@pytest.fixture(scope="module")
def onnx_exports(tiny_onnx_exports):
    """One fp32 ONNX export per backbone with the default exporter (conftest, shared with test_predict)."""
    return tiny_onnx_exports


@pytest.mark.parametrize("name", ["bert", "gpt", "vit"])
def test_onnx_matches_pytorch_on_validation_data(name, onnx_exports, request):
    import onnxruntime as ort

    result = onnx_exports[name]
    manifest = result.manifest
    io, reference = torch_and_inputs(run_of(request, name))
    session = ort.InferenceSession(str(result.folder / "model.onnx"), providers=["CPUExecutionProvider"])
    worst, agree, total = 0.0, 0, 0
    for feed, logits, _ in reference:
        got = session.run(None, feed)[0]
        worst = max(worst, float(np.abs(got - logits).max()))
        agree += int((got.argmax(-1) == logits.argmax(-1)).sum())
        total += len(logits)
    assert total == io.num_examples() and total >= 20
    assert worst <= FP32_ATOL and agree == total
    # the manifest reports the same kind of figure, over the same examples
    assert manifest["parity"]["passed"] and manifest["parity"]["examples"] == total
    assert 0 <= manifest["parity"]["max_abs_diff"] <= FP32_ATOL and manifest["parity"]["label_agreement"] == 1.0
    assert 1 in manifest["parity"]["batch_sizes"] and max(manifest["parity"]["batch_sizes"]) > 1
    assert manifest["onnx"]["checker"] == "passed" and manifest["onnx"]["opset"] == 18
    assert manifest["evaluation"]["accuracy"]["onnx_fp32"] == manifest["evaluation"]["accuracy"]["pytorch_fp32"]


@pytest.mark.parametrize("name", ["bert", "gpt", "vit"])
def test_manifest_describes_the_real_inputs(name, onnx_exports):
    import onnxruntime as ort

    result = onnx_exports[name]
    manifest = json.loads((result.folder / "export_manifest.json").read_text())
    session = ort.InferenceSession(str(result.folder / "model.onnx"), providers=["CPUExecutionProvider"])
    declared = [(i["name"], i["dtype"], i["shape"]) for i in manifest["inputs"]]
    actual = [(i.name, i.type.replace("tensor(", "").replace(")", "").replace("float", "float32")
               if i.type == "tensor(float)" else i.type[7:-1], i.shape) for i in session.get_inputs()]
    assert declared == actual
    assert [o["name"] for o in manifest["outputs"]] == [o.name for o in session.get_outputs()] == ["logits"]
    assert manifest["outputs"][0]["shape"] == ["batch", len(manifest["label_names"])]
    assert manifest["fmctl_version"] and manifest["format"] == "onnx"
    prep = manifest["preprocessing"]
    if name == "vit":
        assert declared == [("pixel_values", "float32", ["batch", 3, 16, 16])]
        assert prep["image_size"] == 16 and prep["mean"] == [0.5] * 3 and prep["crop_pct"] == 1.0
        assert manifest["label_names"] == ["horizontal", "vertical"]
    else:
        expected = ["input_ids", "attention_mask"] + (["token_type_ids"] if name == "bert" else [])
        assert [d[0] for d in declared] == expected
        assert all(d[1] == "int64" and d[2] == ["batch", "sequence"] for d in declared)
        assert prep["max_length"] == 48 and (result.folder / prep["tokenizer_file"]).is_file()
        assert manifest["label_names"] == ["negative", "positive"]


def test_int8_keeps_labels_and_reports_accuracy_and_latency(tiny_bert_run):
    # The TorchScript-based exporter keeps this test ~6 s cheaper; the quantizer works on the
    # ONNX graph whichever exporter wrote it (the README's figures use the default one).
    result = export_run(tiny_bert_run, ExportOptions(fmt="onnx", quantize="int8", exporter="torchscript"), log=quiet)
    m = result.manifest
    assert result.folder == tiny_bert_run / "export" / "onnx-int8"
    assert m["parity"]["max_abs_diff"] <= FP32_ATOL              # the fp32 graph was checked first
    int8 = m["parity_int8"]
    assert int8["passed"] and int8["label_agreement"] >= INT8_MIN_AGREEMENT and int8["min_agreement"] == 0.95
    assert int8["max_abs_diff"] > 0                              # really quantized: outputs moved
    acc = m["evaluation"]["accuracy"]
    assert acc["pytorch_fp32"] > 0.8 and acc["onnx_int8"] >= acc["onnx_fp32"] - 0.05
    assert m["quantization"]["size_bytes"] < 0.7 * m["quantization"]["fp32_size_bytes"]
    assert (result.folder / "model.onnx").stat().st_size == m["quantization"]["size_bytes"]
    for runner in ("pytorch_fp32", "onnx_fp32", "onnx_int8"):
        row = m["latency"]["results"][runner]
        assert 0 < row["batch_1_ms"] and 0 < row["batch_32_ms"]
        assert row["batch_32_per_s"] == pytest.approx(32_000 / row["batch_32_ms"], rel=1e-2)


def _perturb_weights(path):
    """Add noise to the largest weight of a written ONNX file: a silently broken export."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    values = numpy_helper.to_array(biggest)
    biggest.CopyFrom(numpy_helper.from_array(values + np.float32(0.5) * np.sign(values), biggest.name))
    onnx.save(model, str(path))


def test_broken_export_is_detected_and_leaves_nothing(tiny_gpt_run, monkeypatch):
    from fmctl.export import onnx as onnx_mod

    real = onnx_mod.export_onnx

    def broken(*args, **kwargs):
        info = real(*args, **kwargs)
        _perturb_weights(args[5])
        return info

    monkeypatch.setattr(onnx_mod, "export_onnx", broken)
    out = tiny_gpt_run / "export" / "broken"
    with pytest.raises(ExportError, match=r"parity check failed .*max abs diff .* > atol 0.0001"):
        export_run(tiny_gpt_run, ExportOptions(fmt="onnx", exporter="torchscript"), out=out, log=quiet)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".broken")]


def test_tampered_tolerance_fails_loudly_through_the_cli(tiny_gpt_run, tmp_path):
    from tests.test_bad_inputs import call_main

    out = tmp_path / "strict"
    code, _, err = call_main(["export", str(tiny_gpt_run), "--exporter", "torchscript", "--atol", "1e-12",
                              "--out", str(out)])
    assert code == 2, err
    assert err.startswith("error: export: parity check failed for onnxruntime fp32") and "> atol 1e-12" in err
    assert "Traceback" not in err and not out.exists() and not list(tmp_path.iterdir())


def test_an_earlier_export_survives_a_failed_one(tiny_gpt_run):
    good = export_run(tiny_gpt_run, ExportOptions(fmt="onnx", exporter="torchscript"), out=tiny_gpt_run / "export" /
                      "keep", log=quiet)
    before = (good.folder / "model.onnx").read_bytes()
    with pytest.raises(ExportError):
        export_run(tiny_gpt_run, ExportOptions(fmt="onnx", exporter="torchscript", atol=1e-12), out=good.folder,
                   log=quiet)
    assert (good.folder / "model.onnx").read_bytes() == before
    assert good.manifest["onnx"]["exporter"] == "torchscript"


def test_torchscript_export_matches_pytorch(tiny_vit_run):
    result = export_run(tiny_vit_run, ExportOptions(fmt="torchscript"), log=quiet)
    p = result.manifest["parity"]
    assert p["passed"] and p["max_abs_diff"] <= FP32_ATOL and p["label_agreement"] == 1.0 and p["examples"] >= 20
    assert (result.folder / "model.pt").is_file()


OUTSIDE = r'''
import json, sys
sys.modules["fmctl"] = None  # this script must not need fmctl
import numpy as np, torch
from safetensors.torch import load_file
jobs = json.loads(sys.argv[1])
out = {}
for kind, folder, inputs in jobs:
    feed = {k: torch.from_numpy(v) for k, v in np.load(inputs).items()}
    manifest = json.load(open(f"{folder}/export_manifest.json"))
    if kind == "hf-text":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained(f"{folder}/model").eval()
        AutoTokenizer.from_pretrained(f"{folder}/model")
        with torch.no_grad():
            logits = model(**feed).logits
    elif kind == "safetensors-text":
        from transformers import AutoConfig, AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**manifest["architecture"]["config"]))
        model.load_state_dict(load_file(f"{folder}/model.safetensors"))
        with torch.no_grad():
            logits = model.eval()(**feed).logits
    else:
        import timm
        arch = manifest["architecture"] if kind == "safetensors-image" else None
        if arch:
            model = timm.create_model(arch["architecture"], pretrained=True, pretrained_cfg_overlay={
                **arch["pretrained_cfg_overlay"], "file": f"{folder}/model.safetensors"}, **arch["model_args"])
        else:
            model = timm.create_model(f"local-dir:{folder}/model", pretrained=True)
        with torch.no_grad():
            logits = model.eval()(feed["pixel_values"])
    out[folder] = logits.numpy().tolist()
print(json.dumps(out))
'''


def test_hf_and_safetensors_exports_load_without_fmctl(tiny_bert_run, tiny_vit_run, tmp_path):
    jobs, expected = [], {}
    for run_dir, text in ((tiny_bert_run, True), (tiny_vit_run, False)):
        io, reference = torch_and_inputs(run_dir)
        feed, logits, _ = reference[1]
        inputs = tmp_path / f"{run_dir.parent.name}.npz"
        np.savez(inputs, **feed)
        for fmt in ("hf", "safetensors"):
            result = export_run(run_dir, ExportOptions(fmt=fmt), log=quiet)
            # Same weights; the ViT runs the same code (0 difference). fmctl runs a BERT classifier's
            # last block for [CLS] alone and transformers runs it whole: rounding only.
            assert result.manifest["parity"]["max_abs_diff"] <= (1e-6 if text else 0.0)
            jobs.append((f"{fmt}-{'text' if text else 'image'}", str(result.folder), str(inputs)))
            expected[str(result.folder)] = logits
    done = subprocess.run([sys.executable, "-c", OUTSIDE, json.dumps(jobs)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert set(got) == set(expected)
    for folder, logits in expected.items():
        assert np.abs(np.asarray(got[folder]) - logits).max() <= 1e-5, folder
