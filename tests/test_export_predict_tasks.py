"""Export and predict for token classification, extractive QA, regression, multi-label
and translation: ONNX within 1e-4 of PyTorch on real validation data with the task's own
agreement measure, a run folder and its ONNX export giving the same tags, spans, values and
label sets, ONNX prediction without torch, translation from a run folder and its hf export
giving the same text. Tiny runs, trained only as long as the outputs need to mean something."""
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from fmctl.export.run import export_run
from fmctl.export.io import ExportIO
from fmctl.export.writers import ExportOptions
from fmctl.predict.run import predict
from tests.helpers import finetune, read_jsonl
from tests.task_data import (QA_ANSWERS, TINY, qa_context, write_conll, write_multilabel_csv, write_parallel_tsv,
                             write_scores_csv, write_squad, write_tagged_jsonl)

FP32_ATOL = 1e-4
FAST = ["trainer.eval_every=1000", "trainer.log_every=1000"]


def quiet(_line):
    pass


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tasks")


@pytest.fixture(scope="module")
def runs(root):
    """One tiny run per task, and the new inputs each is predicted on."""
    out, inputs = {}, {}
    conll = write_conll(root / "ner.conll", 200, seed=1)
    out["ner"] = finetune("ner_conll", [f"data.train={conll}", *TINY, *FAST, "data.max_length=48",
                                        "trainer.max_steps=40", "trainer.batch_size=16", "optim.lr=3e-3"],
                          root / "ner").run_dir
    inputs["ner"] = write_tagged_jsonl(root / "new_ner.jsonl", 40, seed=9)
    squad = write_squad(root / "squad.json", 160, seed=1)
    out["qa"] = finetune("qa_squad", [f"data.train={squad}", *TINY, *FAST, "data.max_length=64", "task.doc_stride=16",
                                      "trainer.max_steps=60", "trainer.batch_size=16", "optim.lr=2e-3"],
                         root / "qa").run_dir
    inputs["qa"] = write_questions(root / "questions.jsonl", 30, seed=9)
    scores = write_scores_csv(root / "scores.csv", 200, seed=1)
    out["regression"] = finetune("regression_csv", [f"data.train={scores}", "data.text_column=review",
                                                    "data.label_column=score", *TINY, *FAST, "data.max_length=32",
                                                    "trainer.max_steps=60", "trainer.batch_size=16",
                                                    "optim.lr=3e-3"],
                                 root / "regression").run_dir
    inputs["regression"] = write_scores_csv(root / "new_scores.csv", 40, seed=9)
    topics = write_multilabel_csv(root / "topics.csv", 300, seed=1)
    out["multilabel"] = finetune("multilabel_csv", [f"data.train={topics}", "data.label_column=topics", *TINY, *FAST,
                                                    "data.max_length=32", "trainer.max_steps=150",
                                                    "trainer.batch_size=32", "optim.lr=3e-3"],
                                 root / "multilabel").run_dir
    inputs["multilabel"] = write_multilabel_csv(root / "new_topics.csv", 40, seed=9)
    return out, inputs


def write_questions(path, n, seed):
    """Questions over new contexts, a third long enough to need several windows."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            context, _ = qa_context(rng, rng.choice(QA_ANSWERS), rng.randint(60, 90) if i % 3 == 0 else 12)
            handle.write(json.dumps({"question": "what is the code ?", "context": context}) + "\n")
    return path


@pytest.fixture(scope="module")
def onnx_exports(runs):
    """fp32 ONNX exports; QA with the default (torch.export) exporter, the others with the
    quicker TorchScript-based one (both are held to the same parity check)."""
    return {name: export_run(run_dir, ExportOptions(fmt="onnx", exporter="auto" if name == "qa" else "torchscript"),
                             log=quiet) for name, run_dir in runs[0].items()}


AGREEMENT = {"ner": "tag (real tokens)", "qa": "exact span", "regression": None, "multilabel": "label set"}
OUTPUTS = {"ner": [("logits", ["batch", "sequence", 6])], "qa": [("start_logits", ["batch", "sequence"]),
                                                                  ("end_logits", ["batch", "sequence"])],
           "regression": [("logits", ["batch", 1])], "multilabel": [("logits", ["batch", 4])]}


@pytest.mark.parametrize("name", ["ner", "qa", "regression", "multilabel"])
def test_onnx_matches_pytorch_with_the_task_measure(name, runs, onnx_exports):
    import onnxruntime as ort
    import torch

    from fmctl.config.saved_runs import load_run_config

    run_dir = runs[0][name]
    manifest = onnx_exports[name].manifest
    session = ort.InferenceSession(str(onnx_exports[name].folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(o.name, o.shape) for o in session.get_outputs()] == OUTPUTS[name]
    assert [(o["name"], o["shape"]) for o in manifest["outputs"]] == OUTPUTS[name]
    # recomputed here on the real validation batches, every output
    _, run = load_run_config(run_dir, [])
    io = ExportIO(run, run_dir)
    module = io.module(io.load_model())
    worst, examples = 0.0, 0
    for batch in io.batches(32):
        with torch.no_grad():
            expected = module(*[batch.inputs[n] for n in io.input_names()])
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
        got = session.run(None, {n: batch.inputs[n].numpy() for n in io.input_names()})
        worst = max(worst, *(float(np.abs(g - e).max()) for g, e in zip(got, expected)))
        examples += len(expected[0])
    assert worst <= FP32_ATOL and examples == io.num_examples() >= 10
    parity = manifest["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= FP32_ATOL and parity["examples"] == examples
    assert parity["agreement"] == AGREEMENT[name]
    assert parity["label_agreement"] == (None if name == "regression" else 1.0)
    post = manifest["postprocessing"]
    if name == "ner":
        assert post["kind"] == "word_tags" and post["fill_label"] == "O" and "B-PER" in manifest["label_names"]
        assert manifest["preprocessing"]["is_split_into_words"] is True
    elif name == "qa":
        assert post["kind"] == "answer_span" and post["max_answer_length"] == 30 and post["doc_stride"] == 16
        assert manifest["preprocessing"]["stride"] == 16 and manifest["preprocessing"]["truncation"] == "only_second"
        assert manifest["onnx"]["exporter"] == "dynamo"
    elif name == "multilabel":
        assert post == {"kind": "sigmoid_threshold", "output": "logits", "threshold": 0.5, "labels": "label_names"}
        assert manifest["label_names"] == ["food", "money", "sports", "tech"]
    else:
        assert post["kind"] == "regression" and manifest["label_names"] == ["score"]
    assert (onnx_exports[name].folder / "tokenizer" / "tokenizer.json").is_file()


def test_int8_token_classification_is_judged_on_tags(runs, tmp_path):
    result = export_run(runs[0]["ner"], ExportOptions(fmt="onnx", quantize="int8", exporter="torchscript"),
                        out=tmp_path / "onnx-int8", log=quiet)
    int8 = result.manifest["parity_int8"]
    assert int8["agreement"] == "tag (real tokens)" and int8["passed"] and int8["label_agreement"] >= 0.95
    assert int8["max_abs_diff"] > 0                               # really quantized
    accuracy = result.manifest["evaluation"]["accuracy"]
    assert result.manifest["evaluation"]["metric"] == "token accuracy"
    assert accuracy["onnx_int8"] >= accuracy["pytorch_fp32"] - 0.05


def test_token_tags_are_per_word_and_the_same_from_run_and_onnx(runs, onnx_exports, tmp_path):
    run_dirs, inputs = runs
    from_run = predict(run_dirs["ner"], input_file=inputs["ner"], out=tmp_path / "run.jsonl", log=quiet)
    from_onnx = predict(onnx_exports["ner"].folder, input_file=inputs["ner"], out=tmp_path / "onnx.jsonl", log=quiet)
    assert from_run.predicted == from_onnx.predicted == 40 and not from_run.errors
    run_rows, onnx_rows = read_jsonl(tmp_path / "run.jsonl"), read_jsonl(tmp_path / "onnx.jsonl")
    assert [r["tags"] for r in run_rows] == [r["tags"] for r in onnx_rows]
    gold = read_jsonl(inputs["ner"])
    assert all(len(r["tags"]) == len(r["words"]) == len(g["tokens"]) for r, g in zip(run_rows, gold))  # per word
    tags = [t for r in run_rows for t in r["tags"]]
    right = np.mean([t == g for r, row in zip(run_rows, gold) for t, g in zip(r["tags"], row["tags"])])
    assert len(set(tags)) > 2 and right > 0.7     # the tags are real, not all 'O'


def test_qa_spans_from_long_contexts_are_the_same_from_run_and_onnx(runs, onnx_exports, tmp_path):
    run_dirs, inputs = runs
    source = tmp_path / "questions.jsonl"
    blank = [{"question": " ", "context": "the code is zorb ."}, {"question": "what is the code ?", "context": ""}]
    source.write_text(inputs["qa"].read_text() + json.dumps({"ID": "q-31", "question": "what is the code ?"}) + "\n"
                      + "".join(json.dumps(row) + "\n" for row in blank))
    from_run = predict(run_dirs["qa"], input_file=source, out=tmp_path / "run.jsonl", log=quiet)
    from_onnx = predict(onnx_exports["qa"].folder, input_file=source, out=tmp_path / "onnx.jsonl", log=quiet)
    assert from_run.predicted == from_onnx.predicted == 30 and len(from_run.errors) == len(from_onnx.errors) == 3
    assert "questions.jsonl:31: no value for column 'context'" in from_onnx.errors[0]
    assert [e.split(": ", 1)[1] for e in from_run.errors[1:]] == [e.split(": ", 1)[1] for e in from_onnx.errors[1:]] \
        == ["the question is empty", "the context is empty"]
    run_rows, onnx_rows = read_jsonl(tmp_path / "run.jsonl"), read_jsonl(tmp_path / "onnx.jsonl")
    assert run_rows[30]["id"] == onnx_rows[30]["id"] == "q-31" and "id" not in run_rows[0]  # an id column joins back
    assert [(r.get("answer"), r.get("start"), r.get("end")) for r in run_rows] == \
        [(r.get("answer"), r.get("start"), r.get("end")) for r in onnx_rows]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(run_rows[:30], onnx_rows[:30])) <= 1e-3
    for row in run_rows[:30]:
        assert row["context"][row["start"]:row["end"]] == row["answer"]
    traced = export_run(run_dirs["qa"], ExportOptions(fmt="torchscript"), out=tmp_path / "ts", log=quiet).folder
    predict(traced, input_file=source, out=tmp_path / "ts.jsonl", log=quiet)
    assert [r.get("answer") for r in read_jsonl(tmp_path / "ts.jsonl")] == [r.get("answer") for r in run_rows]
    found = np.mean([r["context"].split("code ")[1].split()[0] == r["answer"] for r in run_rows[:30]])
    long_found = np.mean([r["context"].split("code ")[1].split()[0] == r["answer"] for r in run_rows[:30:3]])
    assert found > 0.6 and long_found > 0.5   # including contexts read in several windows


def test_qa_windows_run_in_bounded_chunks_with_the_same_answers(runs, onnx_exports, tmp_path, monkeypatch):
    """A long context makes many windows from one row; they go through the model a few at
    a time (memory stays bounded) and the answers are the ones of one big call."""
    import fmctl.predict.targets as targets

    run_dirs, inputs = runs
    whole = predict(onnx_exports["qa"].folder, input_file=inputs["qa"], out=tmp_path / "whole.jsonl", log=quiet)
    monkeypatch.setattr(targets, "MAX_RUN_ROWS", 2)
    for name, folder in (("onnx", onnx_exports["qa"].folder), ("run", run_dirs["qa"])):
        chunked = predict(folder, input_file=inputs["qa"], out=tmp_path / f"{name}.jsonl", log=quiet)
        assert chunked.predicted == whole.predicted
        assert [(r["answer"], r["start"]) for r in read_jsonl(tmp_path / f"{name}.jsonl")] == \
            [(r["answer"], r["start"]) for r in read_jsonl(tmp_path / "whole.jsonl")]


def test_one_question_from_the_command_line(runs, onnx_exports, tmp_path):
    from fmctl.errors import DataError

    run_dirs, inputs = runs
    first = read_jsonl(inputs["qa"])[0]
    predict(run_dirs["qa"], input_file=inputs["qa"], out=tmp_path / "all.jsonl", log=quiet)
    expected = read_jsonl(tmp_path / "all.jsonl")[0]
    for target in (run_dirs["qa"], onnx_exports["qa"].folder):
        done = subprocess.run([sys.executable, "-m", "fmctl", "predict", str(target), "--question", first["question"],
                               "--context", first["context"]], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        row = json.loads(done.stdout.strip().splitlines()[-1])
        assert (row["question"], row["answer"], row["start"]) == (first["question"], expected["answer"],
                                                                  expected["start"])
    with pytest.raises(DataError, match="--question needs --context too"):
        predict(run_dirs["qa"], question="what is the code ?", log=quiet)
    with pytest.raises(DataError, match="is a token_classification model, not extractive_qa"):
        predict(run_dirs["ner"], question="what is the code ?", context="the code is zorb", log=quiet)


def test_regression_values_and_label_sets_are_the_same_from_run_and_onnx(runs, onnx_exports, tmp_path):
    import csv

    run_dirs, inputs = runs
    for name in ("regression", "multilabel"):
        predict(run_dirs[name], input_file=inputs[name], out=tmp_path / f"{name}_run.csv", log=quiet)
        predict(onnx_exports[name].folder, input_file=inputs[name], out=tmp_path / f"{name}_onnx.csv", log=quiet)
    rows = {k: list(csv.DictReader(open(tmp_path / f"{k}.csv", encoding="utf-8")))
            for k in ("regression_run", "regression_onnx", "multilabel_run", "multilabel_onnx")}
    values = [np.array([float(r["prediction"]) for r in rows[k]]) for k in ("regression_run", "regression_onnx")]
    assert len(values[0]) == 40 and np.abs(values[0] - values[1]).max() <= 1e-4
    gold = [float(r["score"]) for r in csv.DictReader(open(inputs["regression"], encoding="utf-8"))]
    assert np.corrcoef(gold, values[0])[0, 1] > 0.5      # the model reads the text
    sets = [[json.loads(r["labels"]) for r in rows[k]] for k in ("multilabel_run", "multilabel_onnx")]
    assert sets[0] == sets[1] and any(sets[0]) and len({tuple(s) for s in sets[0]}) > 2
    assert set(rows["multilabel_run"][0]) == {"row", "text", "labels", "prob_food", "prob_money", "prob_sports",
                                              "prob_tech", "error"}
    probs = [np.array([[float(r[f"prob_{t}"]) for t in ("food", "money", "sports", "tech")] for r in rows[k]])
             for k in ("multilabel_run", "multilabel_onnx")]
    assert np.abs(probs[0] - probs[1]).max() <= 1e-4
    # a label is in the set exactly when its probability reaches the threshold
    assert all((p >= 0.5).tolist() == [t in s for t in ("food", "money", "sports", "tech")]
               for p, s in zip(probs[0], sets[0]))


NO_TORCH = ("import sys; from fmctl.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'timm') if m in sys.modules]\n"
            "print('heavy:', heavy); sys.exit(3 if heavy else 0)")


@pytest.mark.parametrize("name", ["ner", "qa"])
def test_onnx_prediction_of_tags_and_spans_never_imports_torch(name, runs, onnx_exports, tmp_path):
    out = tmp_path / "preds.jsonl"
    done = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", str(onnx_exports[name].folder), "--input",
                           str(runs[1][name]), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "heavy: []" in done.stdout
    rows = read_jsonl(out)
    assert len(rows) == (40 if name == "ner" else 30) and not any("error" in r for r in rows)
    assert all(("tags" in r) if name == "ner" else ("answer" in r and "start" in r) for r in rows)


@pytest.fixture(scope="module")
def translation_runs(root):
    pairs = write_parallel_tsv(root / "pairs.tsv", 400, seed=1)
    common = [f"data.train={pairs}", *TINY, *FAST, "data.max_length=32", "data.max_target_length=32",
              "task.generation.max_new_tokens=12", "trainer.batch_size=32", "optim.lr=3e-3", "trainer.max_steps=80"]
    return {"gpt": finetune("translation_gpt", common, root / "gpt").run_dir,
            "t5": finetune("translation_t5", [*common, "backbone.num_heads=4"], root / "t5").run_dir}


@pytest.mark.parametrize("name", ["gpt", "t5"])
def test_translation_from_run_folder_and_hf_export_agree(name, translation_runs, tmp_path):
    run_dir = translation_runs[name]
    exported = export_run(run_dir, ExportOptions(fmt="hf"), log=quiet)
    manifest = exported.manifest
    assert manifest["parity"]["max_abs_diff"] == 0.0 and manifest["parity"]["label_agreement"] == 1.0
    assert manifest["postprocessing"]["kind"] == "generate"
    assert manifest["postprocessing"]["decoder_only"] is (name == "gpt")
    assert manifest["load"].startswith("AutoModelForCausalLM" if name == "gpt" else "AutoModelForSeq2SeqLM")
    sources = tmp_path / "sources.txt"
    sources.write_text("wba wbe wbi\nwbo wda\nwku wsa wte wli\n", encoding="utf-8")
    from_run = predict(run_dir, input_file=sources, out=tmp_path / "run.jsonl", log=quiet)
    from_hf = predict(exported.folder, input_file=sources, out=tmp_path / "hf.jsonl", log=quiet)
    assert from_run.predicted == from_hf.predicted == 3
    run_rows, hf_rows = read_jsonl(tmp_path / "run.jsonl"), read_jsonl(tmp_path / "hf.jsonl")
    assert run_rows == hf_rows and [r["source"] for r in run_rows] == ["wba wbe wbi", "wbo wda", "wku wsa wte wli"]
    assert all(isinstance(r["translation"], str) for r in run_rows)
    # the task's own generate: predict's encoding gives the text evaluation generates for
    # the same sources (prefix, separator or </s>, left-padded GPT prompts, settings)
    import torch

    from fmctl.config.saved_runs import load_run_config
    from fmctl.predict.generate import Translator
    from fmctl.tasks import get_task

    _, run = load_run_config(run_dir, [])
    task = get_task(run.task)
    data = task.prepare(run, model_dir=run_dir / "model", splits=("validation",))
    batch = data.collate([data.validation[i] for i in range(6)])
    with torch.no_grad():
        generated = task.eval_forward(task.load_model(run_dir / "model").eval(), batch)
    metrics = task.new_metrics()
    metrics.update(generated, batch, None)
    hypotheses, _ = metrics.texts()
    sources = [task.pairs[i].source for i in sorted(batch["pair"].tolist())]
    predicted = Translator.from_run(run_dir, run)([{"source": s} for s in sources])
    assert [r["translation"] for r in predicted] == hypotheses
    assert len(set(hypotheses)) > 1          # varied output, so agreeing means something


def test_light_encoders_match_fmctl_tokenization_for_words_and_windows(runs, onnx_exports):
    """The torch-free word and QA-window encoders give the ids, word starts, windows and
    character offsets that fmctl's own (transformers) path gives, long contexts included."""
    from fmctl.models.text import load_tokenizer_only
    from fmctl.predict import encode

    names = ["input_ids", "attention_mask", "token_type_ids"]
    manifest = onnx_exports["ner"].manifest
    words = [{"text": ["alice", "met", "josé", "in", "san", "josé", "😀"] * 9}, {"text": "visit jordan — today ."}]
    light = encode.LightWordEncoder(onnx_exports["ner"].folder, manifest["preprocessing"], names)(words)
    reference = encode.ReferenceWordEncoder(load_tokenizer_only(runs[0]["ner"] / "model"), 48, names)(words)
    assert light[2] == reference[2] and max(map(max, (m[1] for m in light[2]))) < 63   # cut at max_length
    for name in names:
        width = reference[0][name].shape[1]
        assert np.array_equal(light[0][name][:, :width], reference[0][name]), name
    manifest = onnx_exports["qa"].manifest
    rng = random.Random(3)
    questions = [{"question": "what is the code ?", "context": qa_context(rng, "zorb", n)[0] + " naïve café"}
                 for n in (5, 70, 150)]
    light = encode.LightQAEncoder(onnx_exports["qa"].folder, manifest["preprocessing"], names)(questions)
    reference = encode.ReferenceQAEncoder(load_tokenizer_only(runs[0]["qa"] / "model"), 64, 16, names)(questions)
    assert [(p, w.offsets, w.null_index) for p, w in light[2]] == [(p, w.offsets, w.null_index) for p, w in reference[2]]
    assert len(light[2]) > 6                            # the long contexts are read in several windows
    for name in names:
        width = reference[0][name].shape[1]
        assert np.array_equal(light[0][name][:, :width], reference[0][name]), name


@pytest.fixture(scope="module")
def pretrain_runs(root):
    """One-step-trained clm, mlm and mim runs: their weights-only exports are what is checked."""
    import os

    from rich.console import Console

    from fmctl import pipeline
    from fmctl.config.compose import schema_from_overrides
    from fmctl.config.prepare_schema import PrepareConfig
    from fmctl.data.prepare import prepare_corpus
    from tests.helpers import TINY_VIT, compose, write_shapes_folder

    quiet_console = Console(file=open(os.devnull, "w"))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(f"document {i} talks about rivers and hills {i % 7}" for i in range(300)),
                      encoding="utf-8")
    out = {}
    for kind, recipe, vocab in (("wordpiece", "bert_mlm", 200), ("bpe", "gpt_clm", 300)):
        cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={root / kind}", f"tokenizer.kind={kind}",
                                                    f"tokenizer.vocab_size={vocab}", "dedup.near=false",
                                                    "validation_fraction=0.1"])
        prepare_corpus(cfg, quiet_console)
        raw, run = compose(recipe, [f"data.prepared={root / kind}", "backbone.hidden_size=64", "backbone.num_layers=2",
                                    "backbone.num_heads=2", "data.max_length=32", "trainer.max_steps=2",
                                    "trainer.progress=off", "trainer.precision=fp32", *FAST], root / recipe)
        out[recipe] = pipeline.pretrain(run, raw, console=quiet_console).run_dir
    shapes = write_shapes_folder(root / "shapes", per_class=12, seed=3)
    raw, run = compose("vit_mim", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=2", *FAST], root / "mim")
    out["vit_mim"] = pipeline.pretrain(run, raw, console=quiet_console).run_dir
    return out


@pytest.mark.parametrize("recipe, auto", [("bert_mlm", "AutoModelForMaskedLM"), ("gpt_clm", "AutoModelForCausalLM"),
                                          ("vit_mim", None)])
def test_pretraining_runs_export_weights_and_refuse_onnx(recipe, auto, pretrain_runs, tmp_path):
    from fmctl.errors import ExportError

    run_dir = pretrain_runs[recipe]
    for fmt in ("safetensors", "hf"):
        manifest = export_run(run_dir, ExportOptions(fmt=fmt), out=tmp_path / fmt, log=quiet).manifest
        assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_diff"] == 0.0
        assert manifest["parity"]["examples"] > 0
        if auto and fmt == "safetensors":
            assert manifest["architecture"]["auto_class"] == auto
        if fmt == "hf":
            assert manifest["load"].startswith(auto or "timm.create_model")
    task = {"bert_mlm": "mlm", "gpt_clm": "clm", "vit_mim": "mim"}[recipe]
    refused = "torchscript" if task == "clm" else "onnx"  # a causal LM exports its logits to ONNX (below)
    with pytest.raises(ExportError, match=f"format '{refused}' is not supported for task '{task}'; {task} exports "
                                          f"to: {'onnx, ' if task == 'clm' else ''}safetensors, hf"):
        export_run(run_dir, ExportOptions(fmt=refused), out=tmp_path / refused, log=quiet)
    assert not (tmp_path / refused).exists()
