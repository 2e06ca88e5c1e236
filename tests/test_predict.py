"""`fmctl predict`: a run folder and its ONNX export give the same labels; ONNX needs no
torch; bad rows are reported one by one while the rest are predicted; bad targets and
inputs give one line. The bad-input catalogue at the end is data, one row per case."""
import csv
import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fmctl.predict.run import predict
from tests.helpers import TINY_TEXT, finetune, read_jsonl, write_pairs_jsonl, write_reviews_csv, write_shapes_folder
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


def test_an_empty_text_is_a_row_error_from_the_run_and_its_export(tiny_bert_run, tiny_onnx_exports, tmp_path):
    """A model given only [CLS] [SEP] answers with a confident label that says nothing
    about the row: empty texts are row errors, and the rows around them are predicted."""
    rows = tmp_path / "rows.csv"
    rows.write_text('Review Text ,Sentiment\n"Great product, loved it",positive\n"",positive\n"   ",negative\n'
                    '"Broken and useless",negative\n', encoding="utf-8")
    for name, target in (("run", tiny_bert_run), ("onnx", tiny_onnx_exports["bert"].folder)):
        summary = predict(target, input_file=rows, out=tmp_path / f"{name}.jsonl", log=quiet)
        records = read_jsonl(tmp_path / f"{name}.jsonl")
        assert summary.predicted == 2 and [("label" in r, r.get("error", "")) for r in records] == [
            (True, ""), (False, f"{rows}:3: the text is empty"), (False, f"{rows}:4: the text is empty"), (True, "")]
        alone = predict(target, text="", out=tmp_path / f"{name}-one.jsonl", log=quiet)
        assert alone.predicted == 0 and alone.errors == ["--text: the text is empty"]


def test_onnx_predict_takes_a_thread_setting(tiny_onnx_exports, new_reviews, tmp_path, monkeypatch):
    from fmctl.export import onnx as onnx_module

    asked = []
    real = onnx_module.session
    monkeypatch.setattr(onnx_module, "session", lambda path, threads=None: asked.append(threads) or real(path, threads))
    summary = predict(tiny_onnx_exports["bert"].folder, input_file=new_reviews, out=tmp_path / "p.jsonl", threads=1,
                      log=quiet)
    assert summary.predicted == 150 and asked == [1]


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


def csv_rows(path, delimiter=","):
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        return reader.fieldnames, list(reader)


def test_csv_id_column_comes_from_the_input_not_from_row_one(tiny_onnx_exports, tmp_path):
    """Row 1 an error (invalid JSON; a CSV row with more fields than its header): the CSV
    output still has an id column, with the ids of every row that has one readable."""
    folder = str(tiny_onnx_exports["bert"].folder)
    jsonl = tmp_path / "ids.jsonl"
    jsonl.write_text('{broken json\n{"id": "a-1", "Review Text": "great loved it"}\n'
                     '{"ID": "a-2", "Review Text": "terrible broken"}\n', encoding="utf-8")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("Id,Review Text\nr-1,bad, really bad\nr-2,great loved it\n", encoding="utf-8")
    ragged_last = tmp_path / "ragged_last.csv"
    ragged_last.write_text("Review Text,id\nbad, really bad,r-1\ngreat loved it,r-2\n", encoding="utf-8")
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("ID,Review Text\n", encoding="utf-8")
    for source, out, expected in [(jsonl, "a.csv", ["", "a-1", "a-2"]), (ragged, "b.tsv", ["r-1", "r-2"]),
                                  (ragged_last, "c.csv", ["r-1", "r-2"]), (header_only, "d.csv", [])]:
        code, _, err = call_main(["predict", folder, "--input", str(source), "--out", str(tmp_path / out)])
        assert code == 0, err
        header, rows = csv_rows(tmp_path / out, "\t" if out.endswith(".tsv") else ",")
        assert header[:3] == ["row", "id", "text"], (source.name, header)
        assert [r["id"] for r in rows] == expected, source.name
        assert [bool(r["error"]) for r in rows] == [i == 0 and source != header_only for i in range(len(rows))]
        assert all(r["label"] for r in rows[1:])


def test_a_stray_delimiter_between_columns_leaves_the_id_empty(tiny_onnx_exports, tmp_path):
    """With the id in the middle, which field is the id of a ragged row cannot be told: no guess."""
    source = tmp_path / "middle.csv"
    source.write_text("Review Text,id,stars\nbad, really bad,r-1,3\ngreat loved it,r-2,5\n", encoding="utf-8")
    code, _, err = call_main(["predict", str(tiny_onnx_exports["bert"].folder), "--input", str(source),
                              "--out", str(tmp_path / "out.csv")])
    assert code == 0, err
    _, rows = csv_rows(tmp_path / "out.csv")
    assert [(r["id"], bool(r["error"])) for r in rows] == [("", True), ("r-2", False)]


@pytest.mark.parametrize("name", ["p.csv.gz", "p.tsv.GZ", "p.jsonl.gz"])
def test_gzip_output_is_compressed_in_the_asked_for_format(name, tiny_onnx_exports, new_reviews, tmp_path):
    out = tmp_path / name
    code, _, err = call_main(["predict", str(tiny_onnx_exports["bert"].folder), "--input", str(new_reviews),
                              "--out", str(out)])
    assert code == 0, err
    text = gzip.decompress(out.read_bytes()).decode("utf-8")   # raises if not gzip
    if ".jsonl" in name:
        rows = [json.loads(line) for line in text.splitlines()]
        assert len(rows) == 150 and all(r["label"] in ("positive", "negative") for r in rows)
    else:
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if ".tsv" in name else ","))
        assert len(rows) == 150 and set(rows[0]) == {"row", "text", "label", "prob_negative", "prob_positive", "error"}


def test_jsonl_text_holding_an_object_list_or_boolean_is_a_row_error(tiny_onnx_exports, tmp_path):
    """Such a value would be predicted on its Python spelling ("{'en': 'bad'}"); a number
    is read as text."""
    source = tmp_path / "typed.jsonl"
    values = [{"en": "bad"}, ["great", "product"], True, 12345, "great loved it"]
    source.write_text("".join(json.dumps({"Review Text": v}) + "\n" for v in values), encoding="utf-8")
    summary = predict(tiny_onnx_exports["bert"].folder, input_file=source, out=tmp_path / "out.jsonl", log=quiet)
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r.get("error", "").split(": ", 1)[-1] for r in out[:3]] == [
        "row has an object in 'Review Text', expected text", "row has a list in 'Review Text', expected text",
        "row has a boolean in 'Review Text', expected text"]
    assert "typed.jsonl:1" in out[0]["error"]
    assert summary.predicted == 2 and out[3]["text"] == 12345 and "label" in out[3] and "label" in out[4]


def test_words_may_be_a_list_but_not_a_list_of_objects(tmp_path):
    from fmctl.predict.inputs import text_items

    source = tmp_path / "words.jsonl"
    rows = [{"tokens": ["alice", "met", 7]}, {"tokens": "alice met bob"}, {"tokens": [{"w": "alice"}]},
            {"tokens": {"w": "alice"}}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    items = list(text_items(source, "tokens", None, words=True)[0])
    assert [i.value["text"] if i.error is None else None for i in items[:2]] == [["alice", "met", "7"], "alice met bob"]
    assert items[2].error.endswith("row has a list holding an object in 'tokens', expected a text or a list of words")
    assert items[3].error.endswith("row has an object in 'tokens', expected a text or a list of words")


@pytest.fixture(scope="module")
def pair_targets(tmp_path_factory):
    """A two-step text-PAIR run (premise, hypothesis) and its onnx, torchscript and hf exports."""
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    root = tmp_path_factory.mktemp("pairs")
    data = write_pairs_jsonl(root / "pairs.jsonl", 64, seed=1)
    run_dir = finetune("text_csv", [f"data.train={data}", "data.text_column=premise",
                                    "data.text_pair_column=hypothesis", *TINY_TEXT, "trainer.max_steps=2", "trainer.batch_size=16"], root / "run").run_dir
    targets = {"run": run_dir}
    for fmt in ("onnx", "torchscript", "hf"):
        targets[fmt] = export_run(run_dir, ExportOptions(fmt=fmt, exporter="torchscript"), log=quiet).folder
    return targets


@pytest.mark.parametrize("kind", ["run", "onnx", "torchscript", "hf"])
def test_a_pair_model_refuses_one_text_and_reads_pairs(kind, pair_targets, tmp_path):
    target = str(pair_targets[kind])
    lines = tmp_path / "lines.txt"
    lines.write_text("great product\n", encoding="utf-8")
    one_column = tmp_path / "one.csv"
    one_column.write_text("premise\ngreat product\n", encoding="utf-8")
    for argv, expected in [
        (["--text", "great product"], "this model reads text pairs ('premise', 'hypothesis'); give --text-pair too"),
        (["--input", str(lines)], "a .txt file holds one text a line; this model needs the columns premise, hypothesis"),
        (["--input", str(one_column)], "no column 'hypothesis' for --text-pair-column"),
    ]:
        code, out, err = call_main(["predict", target, *argv])
        errors = [line for line in err.splitlines() if line.startswith("error")]
        assert code == 2 and len(errors) == 1 and expected in errors[0], err
        assert "Traceback" not in out + err
    code, out, err = call_main(["predict", target, "--text", "great product", "--text-pair", "awful refund"])
    assert code == 0, err
    record = json.loads(out)
    assert (record["text"], record["text_pair"]) == ("great product", "awful refund")
    assert record["label"] in ("same", "different")
    both = tmp_path / "both.csv"
    both.write_text("premise,hypothesis\ngreat product,awful refund\n", encoding="utf-8")
    summary = predict(pair_targets[kind], input_file=both, out=tmp_path / "out.csv", log=quiet)
    assert summary.predicted == 1
    assert csv_rows(tmp_path / "out.csv")[0][:3] == ["row", "text", "text_pair"]


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
    light, light_errors = LightTextEncoder(folder, prep, names)(values)
    reference, errors = ReferenceTextEncoder(load_tokenizer_only(tiny_bert_run / "model"), 48, True, names)(values)
    assert light_errors == errors == {2: "the text is empty"}  # a row error, not a label for [CLS] [SEP]
    assert light["input_ids"].shape == (2, 48)
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


def _export_that_cannot_load(tmp_path, exports):
    """The bert export with its model file garbled: a case that names it fails before any
    model is loaded, or it would end in onnxruntime's error instead."""
    folder = tmp_path / "unloadable"
    shutil.copytree(exports["bert"].folder, folder)
    (folder / "model.onnx").write_bytes(b"not a model")
    return folder


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
     "no column 'Review Text' for --text-column"),
    ("--text-column not in the input", ["predict", "{unloadable}", "--input", "{wrong}", "--text-column", "review"],
     "wrong.csv: no column 'review' for --text-column"),
    ("--out of a format predict does not write", ["predict", "{unloadable}", "--text", "hi", "--out", "{tmp}/p.parquet"],
     "--out: cannot write 'p.parquet'; predictions are written as .jsonl, .csv, .tsv (each optionally .gz)"),
    ("--out of a format predict does not write, with --prompt", ["predict", "{unloadable}", "--prompt", "hi", "--out",
                                                                 "{tmp}/p.csv.zip"],
     "--out: cannot write 'p.csv.zip'; predictions are written as .jsonl, .csv, .tsv (each optionally .gz)"),
    ("--out in a folder that does not exist", ["predict", "{unloadable}", "--text", "hi", "--out",
                                               "/nonexistent/dir/p.csv"], "--out: folder /nonexistent/dir does not exist"),
    ("--text-pair to a one-text model", ["predict", "{unloadable}", "--text", "a", "--text-pair", "b"],
     "this model reads one text ('Review Text'); --text-pair is not used"),
    ("--text-pair-column to a one-text model", ["predict", "{run}", "--input", "{wrong}", "--text-column", "body",
                                                "--text-pair-column", "stars"],
     "this model reads one text ('Review Text'); --text-pair-column is not used"),
    ("--text-pair without --text", ["predict", "{onnx}", "--input", "{wrong}", "--text-pair", "b"],
     "--text-pair: give it with --text"),
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
    if "{unloadable}" in " ".join(argv):
        paths["unloadable"] = _export_that_cannot_load(tmp_path, tiny_onnx_exports)
    paths["tmp"] = tmp_path
    before = sorted(p.name for p in (tiny_bert_run / "export").iterdir()) if (tiny_bert_run / "export").exists() else []
    code, out, err = call_main([a.format(**paths) for a in argv])
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2, out + err
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err + out
    after = sorted(p.name for p in (tiny_bert_run / "export").iterdir()) if (tiny_bert_run / "export").exists() else []
    assert after == before


def test_an_interrupted_predict_keeps_the_earlier_output_and_its_partial_rows(tiny_onnx_exports, tmp_path,
                                                                                   monkeypatch):
    """Output goes to <out>.partial and takes the --out name only when every row is in: a
    run stopped half-way (Ctrl-C, SIGTERM, a crash) leaves the previous file as it was and
    a valid partial one beside it (a gzip stream closed properly)."""
    import fmctl.predict.run as run_mod

    source = tmp_path / "texts.csv"
    source.write_text("id,Review Text\n" + "".join(f"r{i},great loved it {i}\n" for i in range(6)), encoding="utf-8")
    out = tmp_path / "preds.csv.gz"
    with gzip.open(out, "wt", encoding="utf-8") as handle:
        handle.write("earlier results\n")
    real = run_mod._predict_chunk
    calls = {"n": 0}

    def stop_on_third(target, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(target, chunk)

    monkeypatch.setattr(run_mod, "_predict_chunk", stop_on_third)
    said = []
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_onnx_exports["bert"].folder, input_file=source, out=out, batch_size=2, log=said.append)
    assert gzip.open(out, "rt", encoding="utf-8").read() == "earlier results\n"
    partial = list(csv.DictReader(gzip.open(f"{out}.partial", "rt", encoding="utf-8")))
    assert [r["id"] for r in partial] == ["r0", "r1", "r2", "r3"]
    assert any("stopped after 4 rows" in line for line in said)
    monkeypatch.setattr(run_mod, "_predict_chunk", real)
    predict(tiny_onnx_exports["bert"].folder, input_file=source, out=out, batch_size=2, log=said.append)
    assert len(list(csv.DictReader(gzip.open(out, "rt", encoding="utf-8")))) == 6
