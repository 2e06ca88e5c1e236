"""Extractive QA end to end on SQuAD v1.1 and v2.0 files where the answer is the word
after a marker: long contexts need several windows, answers come back as exact character
spans, v2.0's questions without an answer are handled, and the files eval writes are the
official formats."""
import json
import os

import pytest
from rich.console import Console

from fmctl import pipeline
from fmctl.config.saved_runs import load_run_config
from tests.helpers import finetune, read_jsonl
from tests.task_data import TINY, write_squad

STEPS = ["data.max_length=64", "task.doc_stride=16", "trainer.batch_size=16", "optim.lr=2e-3",
         "trainer.log_every=10"]


class Printed:
    """A console that keeps what the pipeline printed."""

    def __init__(self):
        self.lines = []

    def print(self, item="", *args, **kwargs):
        self.lines.append(str(item))


def evaluate(run_dir, overrides=()):
    raw, run = load_run_config(run_dir, list(overrides))
    return pipeline.evaluate_run(run_dir, run, raw, console=Console(file=open(os.devnull, "w")))


@pytest.fixture(scope="module")
def squad1(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad1")
    train, test = write_squad(root / "train.json", 400, seed=1), write_squad(root / "test.json", 80, seed=2)
    result = finetune("qa_squad", [f"data.train={train}", f"data.test={test}", *TINY, *STEPS,
                                   "trainer.max_steps=120", "trainer.eval_every=60"], root / "run")
    return result, evaluate(result.run_dir), test


def test_v1_answers_beat_a_first_word_baseline(squad1):
    from torchmetrics.functional.text import squad

    result, report, test = squad1
    paragraphs = json.loads(test.read_text())["data"][0]["paragraphs"]  # one question each
    baseline = squad([{"id": p["qas"][0]["id"], "prediction_text": p["context"].split()[0]} for p in paragraphs],
                     [{"id": p["qas"][0]["id"], "answers": {"text": [a["text"] for a in p["qas"][0]["answers"]],
                                                            "answer_start": [0]}} for p in paragraphs])
    assert float(baseline["exact_match"]) < 15
    assert report["exact_match"] > 90 and report["f1"] > 90, report
    assert report["squad_version"] == "1.1" and report["num_examples"] == 80
    assert report["num_windows"] > report["num_examples"]  # the long contexts were cut into windows
    assert result.metrics["test/f1"] == pytest.approx(report["f1"])


def test_v1_eval_writes_squad_predictions(squad1):
    result, report, test = squad1
    folder = result.run_dir / "eval"
    predictions = json.loads((folder / "predictions.json").read_text())
    rows = read_jsonl(folder / "predictions.jsonl")
    assert len(predictions) == len(rows) == 80 and not (folder / "null_odds.json").exists()
    assert predictions == {r["id"]: r["prediction"] for r in rows}
    exact = sum(r["prediction"] in r["answers"] for r in rows) / len(rows)
    assert 100 * exact == pytest.approx(report["exact_match"])
    contexts = {qa["id"]: p["context"] for p in json.loads(test.read_text())["data"][0]["paragraphs"]
                for qa in p["qas"]}
    assert all(r["prediction"] in contexts[r["id"]] for r in rows)  # spans of the context, character-exact


def test_eval_scores_every_question_even_with_misplaced_answer_starts(squad1, tmp_path):
    """SQuAD's official script compares answer texts only: a dev file whose answer_start
    offsets are wrong is still scored on all its questions and answers."""
    result, report, test = squad1
    document = json.loads(test.read_text())
    for p in document["data"][0]["paragraphs"][::4]:
        for answer in p["qas"][0]["answers"]:
            answer["answer_start"] += 2
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(document), encoding="utf-8")
    again = evaluate(result.run_dir, [f"data.test={shifted}"])
    assert again["num_examples"] == 80
    assert again["exact_match"] == pytest.approx(report["exact_match"]) and again["f1"] == pytest.approx(report["f1"])
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    assert len(json.loads((result.run_dir / "eval" / "predictions.json").read_text())) == 80
    assert all(r["answers"] for r in rows)


def test_qa_model_reloads_and_finds_the_span(squad1):
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    result, _, _ = squad1
    model_dir = result.run_dir / "model"
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert type(model).__name__ == "BertForQuestionAnswering"
    context = "river stone cloud code mango apple table"
    enc = tokenizer("what is the code ?", context, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        out = model(**enc)
    start, end = int(out.start_logits.argmax()), int(out.end_logits.argmax())
    assert context[offsets[start][0]:offsets[end][1]] == "mango"


@pytest.fixture(scope="module")
def squad2(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad2")
    train = write_squad(root / "train.json", 500, seed=3, v2=True, misplaced=4)
    test = write_squad(root / "test.json", 90, seed=4, v2=True)
    printed = Printed()
    from tests.helpers import compose

    raw, run = compose("qa_squad", [f"data.train={train}", f"data.test={test}", *TINY, *STEPS,
                                    "trainer.max_steps=200", "trainer.eval_every=100"], root / "run")
    result = pipeline.finetune(run, raw, console=printed)
    return result, evaluate(result.run_dir), printed, train


def test_v2_handles_questions_without_answers(squad2):
    result, report, _, _ = squad2
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    impossible = sum(not r["answers"] for r in rows) / len(rows)
    assert 0.2 < impossible < 0.5
    # Always answering "" scores the share of impossible questions.
    assert report["exact_match"] > 100 * impossible + 30, report
    assert report["has_answer_f1"] > 75 and report["no_answer_exact_match"] > 75, report
    assert report["squad_version"] == "2.0"
    odds = json.loads((result.run_dir / "eval" / "null_odds.json").read_text())
    assert set(odds) == {r["id"] for r in rows}
    assert all((r["prediction"] == "") == (r["null_score_diff"] > 0) for r in rows)  # threshold 0


def test_v2_null_threshold_trades_answers_for_no_answers(squad2):
    result, _, _, _ = squad2
    never = evaluate(result.run_dir, ["task.null_score_threshold=1e9"])
    always = evaluate(result.run_dir, ["task.null_score_threshold=-1e9"])
    assert never["no_answer_exact_match"] == 0 and always["has_answer_exact_match"] == 0
    assert always["no_answer_exact_match"] == 100


def test_misplaced_answers_are_skipped_with_one_warning(squad2):
    _, _, printed, train = squad2
    paragraphs = json.loads(train.read_text())["data"][0]["paragraphs"]
    bad = [p["qas"][0]["id"] for p in paragraphs for a in p["qas"][0]["answers"]
           if p["context"][a["answer_start"]:a["answer_start"] + len(a["text"])] != a["text"]]
    assert 1 <= len(bad) <= 4
    shown = ", ".join(f"'{i}'" for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
    warnings = [line for line in printed.lines if line.startswith("warning:")]
    plural = "s" if len(bad) > 1 else ""
    assert warnings == [f"warning: {train}: {len(bad)} answer{plural} whose text does not occur at "
                        f"answer_start (questions {shown}): not used as training spans, still scored as gold answers",
                        f"warning: {train}: skipped {len(bad)} training question{plural} left without a usable "
                        f"answer span ({shown})"]
    manifest = json.loads((squad2[0].run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"


def test_best_answer_respects_context_length_and_threshold():
    import numpy as np

    from fmctl.tasks.extractive_qa import Window, best_answer

    context = "alpha beta gamma delta"
    # tokens: [CLS] q [SEP] alpha beta gamma delta [SEP]
    window = Window(0, [None, None, None, (0, 5), (6, 10), (11, 16), (17, 22), None], 0)
    start = np.array([0.0, 9.0, 0.0, 1.0, 5.0, 0.0, 0.0, 0.0])   # the question token scores best: not context
    end = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 4.0, 0.0])
    answer = best_answer([(window, start, end)], context, n_best=5, max_answer_length=5, allow_no_answer=False,
                         null_threshold=0.0)
    assert answer.text == "beta gamma delta" and answer.score == 9.0
    short = best_answer([(window, start, end)], context, 5, 2, False, 0.0)
    assert short.text == "beta"  # beta..delta is three tokens, beyond the limit
    start[0], end[0] = 6.0, 4.0  # no-answer scores 10 against the best span's 9
    assert best_answer([(window, start, end)], context, 5, 5, True, 0.0).text == ""
    assert best_answer([(window, start, end)], context, 5, 5, True, 1.5).text == "beta gamma delta"
