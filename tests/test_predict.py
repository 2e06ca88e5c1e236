"""`fmctl predict`: a run folder and its ONNX export give the same labels; ONNX needs no
torch; bad rows are reported one by one while the rest are predicted; bad targets and
inputs give one line. The bad-input catalogue at the end is data, one row per case."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fmctl.predict.run import predict
from tests.helpers import read_jsonl, write_reviews_csv, write_shapes_folder
from tests.test_bad_inputs import call_main


def quiet(_line):
    pass


@pytest.fixture(scope="module")
def new_reviews(tmp_path_factory):
    """Reviews neither run has seen, with the header spelled as in training."""
    return write_reviews_csv(tmp_path_factory.mktemp("new") / "new.csv", 150, seed=7)


def labels_and_probs(path):
    rows = read_jsonl(path)
    return [r.get("label") for r in rows], np.array([list(r["probabilities"].values()) for r in rows if "label" in r])


@pytest.mark.parametrize("name", ["bert", "gpt"])
def test_run_folder_and_onnx_export_agree_on_text(name, request, tiny_onnx_exports, new_reviews, tmp_path):
    run_dir = request.getfixturevalue(f"tiny_{name}_run")
    from_run = predict(run_dir, input_file=new_reviews, out=tmp_path / "run.jsonl", log=quiet)
    from_onnx = predict(tiny_onnx_exports[name].folder, input_file=new_reviews, out=tmp_path / "onnx.jsonl", log=quiet)
    assert from_run.predicted == from_onnx.predicted == 150 and not from_run.errors
    run_labels, run_probs = labels_and_probs(tmp_path / "run.jsonl")
    onnx_labels, onnx_probs = labels_and_probs(tmp_path / "onnx.jsonl")
    assert run_labels == onnx_labels
    assert np.abs(run_probs - onnx_probs).max() <= 1e-4
    gold = [row["Sentiment"] for row in csv.DictReader(open(new_reviews, encoding="utf-8-sig"))]
    assert np.mean([p == g for p, g in zip(run_labels, gold)]) > 0.8   # the model learned; labels are real
    assert len(set(run_labels)) == 2


def test_onnx_prediction_never_imports_torch(tiny_onnx_exports, new_reviews, tmp_path):
    script = ("import sys; from fmctl.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "heavy = [m for m in ('torch', 'transformers', 'timm') if m in sys.modules]\n"
              "print('heavy:', heavy); sys.exit(3 if heavy else 0)")
    out = tmp_path / "preds.csv"
    done = subprocess.run([sys.executable, "-c", script, "predict", str(tiny_onnx_exports["bert"].folder), "--input",
                           str(new_reviews), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "heavy: []" in done.stdout
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 150 and set(rows[0]) == {"row", "text", "label", "prob_negative", "prob_positive", "error"}
    assert all(abs(float(r["prob_negative"]) + float(r["prob_positive"]) - 1) < 1e-5 for r in rows)


def test_images_bad_file_is_one_row_error_and_labels_match(tiny_vit_run, tiny_onnx_exports, tmp_path):
    images = write_shapes_folder(tmp_path / "images", per_class=8, seed=11)
    (images / "vertical" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    from_run = predict(tiny_vit_run, images=images, out=tmp_path / "run.jsonl", log=quiet)
    from_onnx = predict(tiny_onnx_exports["vit"].folder, images=images, out=tmp_path / "onnx.jsonl", log=quiet)
    for summary in (from_run, from_onnx):
        assert summary.rows == 17 and summary.predicted == 16 and len(summary.errors) == 1
        assert "broken.png: cannot decode image" in summary.errors[0]
    run_labels, run_probs = labels_and_probs(tmp_path / "run.jsonl")
    onnx_labels, onnx_probs = labels_and_probs(tmp_path / "onnx.jsonl")
    assert run_labels == onnx_labels and run_labels.count(None) == 1
    assert np.abs(run_probs - onnx_probs).max() <= 1e-4   # numpy/Pillow preprocessing == timm's


def test_rows_missing_the_text_field_are_reported_and_the_rest_predicted(tiny_onnx_exports, tmp_path):
    source = tmp_path / "mixed.jsonl"
    rows = [{"review text": "great loved it, perfect"}, {"title": "no text here"}, "not an object",
            {"Review Text": "terrible broken refund"}]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n", encoding="utf-8")
    code, _, err = call_main(["predict", str(tiny_onnx_exports["bert"].folder), "--input", str(source),
                              "--out", str(tmp_path / "out.jsonl")])
    assert code == 0, err
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["row"] for r in out] == [1, 2, 3, 4, 5]
    assert [("label" in r, "error" in r) for r in out] == [(True, False), (False, True), (False, True),
                                                           (True, False), (False, True)]
    assert "no value for column 'Review Text'" in out[1]["error"] and "mixed.jsonl:2" in out[1]["error"]
    assert "invalid JSON" in out[4]["error"]
    assert out[0]["label"] == "positive" and out[3]["label"] == "negative"
    assert "predicted 2 of 5 rows (3 errors)" in err


def test_an_id_column_is_carried_into_the_output(tiny_onnx_exports, tmp_path):
    source = tmp_path / "with_ids.csv"
    source.write_text("Id,Review Text\nr-7,great loved it\nr-9,terrible broken\n", encoding="utf-8")
    code, _, err = call_main(["predict", str(tiny_onnx_exports["bert"].folder), "--input", str(source),
                              "--out", str(tmp_path / "out.csv")])
    assert code == 0, err
    import csv

    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert [(r["row"], r["id"]) for r in rows] == [("1", "r-7"), ("2", "r-9")] and all(r["label"] for r in rows)


def test_light_text_encoder_matches_fmctl_tokenization_for_pairs(tiny_bert_run, tiny_onnx_exports):
    """The torch-free encoder and fmctl's own (transformers + collator) give identical ids,
    also for sentence pairs and texts longer than max_length."""
    from fmctl.models.text import load_tokenizer_only
    from fmctl.predict.encode import LightTextEncoder, ReferenceTextEncoder

    folder = tiny_onnx_exports["bert"].folder
    manifest = json.loads((folder / "export_manifest.json").read_text())
    prep = dict(manifest["preprocessing"], text_pair_column="other")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    values = [{"text": "great café — naïve 😀 " * 30, "text_pair": "awful " * 40},
              {"text": "ok", "text_pair": "fine, really."}, {"text": "", "text_pair": None}]
    light, _ = LightTextEncoder(folder, prep, names)(values)
    reference, _ = ReferenceTextEncoder(load_tokenizer_only(tiny_bert_run / "model"), 48, True, names)(values)
    assert light["input_ids"].shape == (3, 48)
    for name in names:
        assert np.array_equal(light[name], reference[name]), name
    assert light["token_type_ids"][0].max() == 1


def test_input_is_streamed_not_loaded(tmp_path):
    from fmctl.predict.inputs import text_items

    big = write_reviews_csv(tmp_path / "big.csv", 3000, seed=5)
    items, progress = text_items(big, "Review Text", None)
    first = next(items)
    assert first.row == 1 and first.error is None
    assert progress.position() < progress.total / 4   # only the start of the file has been read
    assert sum(1 for _ in items) == 2999


def _folder_without_model(tmp_path, run):
    bare = tmp_path / "bare_run"
    bare.mkdir()
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    return bare


def _onnx_without_manifest(tmp_path, exports):
    folder = tmp_path / "loose_onnx"
    folder.mkdir()
    shutil.copy(exports["bert"].folder / "model.onnx", folder / "model.onnx")
    return folder


def _csv_with_wrong_columns(tmp_path, _exports):
    path = tmp_path / "wrong.csv"
    path.write_text("body,stars\nnice,5\n", encoding="utf-8")
    return path


# (case, argv with {run}/{onnx}/{bare}/{loose}/{wrong}/{images}, text the one error line must contain)
CASES = [
    ("export of a run folder with no model/", ["export", "{bare}"], "no model/ folder with config.json"),
    ("unsupported format/task pair", ["export", "{run}", "--format", "tflite"],
     "format 'tflite' is not supported for task 'text_classification'; text_classification exports to: "
     "onnx, torchscript, safetensors, hf"),
    ("quantize a format that cannot be", ["export", "{run}", "--format", "hf", "--quantize", "int8"],
     "--quantize int8 is not supported for format 'hf'; supported: onnx --quantize int8"),
    ("export of a folder that is no run", ["export", "{images}"], "not an fmctl run folder (no config.yaml)"),
    ("ONNX folder without its manifest", ["predict", "{loose}", "--text", "hi"], "no export_manifest.json"),
    ("ONNX file without its manifest", ["predict", "{loose}/model.onnx", "--text", "hi"], "no export_manifest.json"),
    ("input without the text column", ["predict", "{onnx}", "--input", "{wrong}"],
     "no column 'Review Text' for data.text_column"),
    ("images given to a text model", ["predict", "{onnx}", "--images", "{images}"], "is a text_classification model"),
    ("two inputs at once", ["predict", "{onnx}", "--text", "a", "--input", "{wrong}"], "give exactly one of"),
    ("missing input file", ["predict", "{onnx}", "--input", "{images}/nope.csv"], "nope.csv: file not found"),
]


@pytest.mark.parametrize("case, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_export_and_predict_input_gives_one_line(case, argv, expected, tiny_bert_run, tiny_onnx_exports,
                                                     tmp_path):
    images = write_shapes_folder(tmp_path / "imgs", per_class=1, seed=0)
    paths = {"run": tiny_bert_run, "onnx": tiny_onnx_exports["bert"].folder, "images": images}
    if "{bare}" in " ".join(argv):
        paths["bare"] = _folder_without_model(tmp_path, tiny_bert_run)
    if "{loose}" in " ".join(argv):
        paths["loose"] = _onnx_without_manifest(tmp_path, tiny_onnx_exports)
    if "{wrong}" in " ".join(argv):
        paths["wrong"] = _csv_with_wrong_columns(tmp_path, tiny_onnx_exports)
    before = sorted(p.name for p in (tiny_bert_run / "export").iterdir()) if (tiny_bert_run / "export").exists() else []
    code, out, err = call_main([a.format(**paths) for a in argv])
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2, out + err
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err + out
    after = sorted(p.name for p in (tiny_bert_run / "export").iterdir()) if (tiny_bert_run / "export").exists() else []
    assert after == before
