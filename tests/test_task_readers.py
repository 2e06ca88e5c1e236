"""Readers of the downstream tasks' files, on small hand-written inputs."""
import gzip
import json

import pytest

from fmctl.config.schema import DataConfig
from fmctl.data.conll import read_token_rows
from fmctl.data.labels import label_list, number_label
from fmctl.data.pairs import read_pairs
from fmctl.data.squad import read_squad
from fmctl.errors import DataError


def test_label_lists_from_cells_and_lists():
    assert label_list("tech| sports |tech", "f", 2, "tags", "|") == ["sports", "tech"]
    assert label_list(["b", "a", 3.0], "f", 2, "tags", "|") == ["3", "a", "b"]
    assert label_list("", "f", 2, "tags", "|") == [] == label_list(None, "f", 2, "tags", "|")
    with pytest.raises(DataError, match="f:2: labels in column 'tags' must be a flat list"):
        label_list([["a"]], "f", 2, "tags", "|")


def test_numeric_labels():
    assert number_label(" 2.5 ", "f", 3, "score") == 2.5 and number_label(4, "f", 3, "score") == 4.0
    with pytest.raises(DataError, match="f:3: label 'n/a' in column 'score' is not a number"):
        number_label("n/a", "f", 3, "score")
    with pytest.raises(DataError, match="f:3: label 'inf' in column 'score' is not a finite number"):
        number_label("inf", "f", 3, "score")


def test_conll_sentences_skip_docstart_and_read_the_last_column(tmp_path):
    path = tmp_path / "train.conll.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\r\n"
                     "Blackburn NNP I-NP I-PER")  # CRLF, several blank lines, no final newline
    rows = read_token_rows(path, DataConfig())
    assert [(r.tokens, r.tags, r.line) for r in rows] == [
        (["EU", "rejects"], ["B-ORG", "O"], 3), (["Peter", "Blackburn"], ["B-PER", "I-PER"], 7)]
    assert rows[1].where(1) == f"{path}:8"


def test_tagged_jsonl_rows(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"words": ["a", "b"], "ner": [0, 1]}) + "\n", encoding="utf-8")
    (row,) = read_token_rows(path, DataConfig(tokens_column="words", tags_column="ner"))
    assert row.tokens == ["a", "b"] and row.tags == ["0", "1"] and row.where(1) == f"{path}:1"


def test_squad_reader_counts_what_it_skips(tmp_path):
    document = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a", "question": "where?", "answers": [{"text": "France", "answer_start": 12},
                                                     {"text": "France", "answer_start": 3}]},
        {"id": "b", "question": "what?", "answers": [{"text": "Paris", "answer_start": 1}]},
        {"id": "c", "question": "who?", "answers": [], "is_impossible": True},
    ]}]}]}
    path = tmp_path / "dev.json"
    document["data"][0]["paragraphs"][0]["qas"].append({"id": "d", "question": "why?", "answers": []})
    path.write_text(json.dumps(document), encoding="utf-8")
    read = read_squad(path)
    # every question with an answer text is kept: scoring compares texts, as SQuAD's script
    assert [(r.id, r.answers, r.references, r.impossible, r.trainable) for r in read.rows] == [
        ("a", [("France", 12)], ["France", "France"], False, True), ("b", [], ["Paris"], False, False),
        ("c", [], [], True, True)]
    assert read.version_2
    assert read.warnings == [f"{path}: 2 answers whose text does not occur at answer_start (questions 'a', 'b'): "
                             f"not used as training spans, still scored as gold answers",
                             f"{path}: skipped 1 question without any answer and not marked is_impossible ('d')"]


def test_squad_duplicate_ids_are_an_error(tmp_path):
    qa = {"id": "x", "question": "q", "answers": [{"text": "a", "answer_start": 0}]}
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "a b", "qas": [qa, qa]}]}]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"data\[0\].paragraphs\[0\].qas\[1\]: question id 'x' already used"):
        read_squad(path)


def test_pairs_with_and_without_header(tmp_path):
    table = tmp_path / "train.jsonl"
    table.write_text(json.dumps({"en": " Hello ", "de": "Hallo"}) + "\n", encoding="utf-8")
    (row,) = read_pairs(table, DataConfig(source_column="en", target_column="de"))
    assert (row.source, row.target, row.line) == ("Hello", "Hallo", 1)
    corpus = tmp_path / "tatoeba.txt"
    corpus.write_text("Go.\tVa !\tCC-BY 2.0 (France) Attribution\n\nHi.\tSalut !\n", encoding="utf-8")
    rows = read_pairs(corpus, DataConfig(format="pairs"))
    assert [(r.source, r.target, r.line) for r in rows] == [("Go.", "Va !", 1), ("Hi.", "Salut !", 3)]


def test_conll_word_with_a_no_break_space_stays_one_word(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nrevenue NN I-NP O\n1\u00a0000 CD I-NP O\neuros NNS I-NP O\n\n"
                    "Paris NNP I-NP B-LOC\t\n", encoding="utf-8")
    rows = read_token_rows(path, DataConfig())
    assert [(r.tokens, r.tags) for r in rows] == [(["revenue", "1\u00a0000", "euros"], ["O", "O", "O"]),
                                                  (["Paris"], ["B-LOC"])]


def test_integral_labels_read_the_same_from_every_format(tmp_path):
    from fmctl.data.labels import label_names_from, label_text
    from fmctl.data.text import read_text_rows

    # pandas writes an int column with a gap as 4.0; JSON may hold 4 or 4.0
    (tmp_path / "train.csv").write_text("text,stars\na,4.0\nb,10.0\nc,2\nd,-1.00\ne,4.5\n", encoding="utf-8")
    assert [r.label for r in read_text_rows(tmp_path / "train.csv", DataConfig(label_column="stars"))] == [
        "4", "10", "2", "-1", "4.5"]
    assert label_text(4.0, "f", 1, "y") == label_text("4", "f", 1, "y") == label_text(" 4.00 ", "f", 1, "y") == "4"
    assert label_text("007", "f", 1, "y") == "007"  # codes keep their spelling
    assert label_names_from(["10", "4", "2"]) == ["2", "4", "10"]
    assert label_list("1.0|10.0|2", "f", 2, "tags", "|") == ["1", "10", "2"]


def test_labels_of_a_model_saved_as_4_0_still_match(tmp_path):
    """A model trained before labels were normalised has '4.0' in config.json: eval and
    predictions keep its spelling instead of calling every '4' unknown."""
    from fmctl.data.text import TextRow
    from fmctl.tasks.classification import label_vocabulary

    rows = {"test": [TextRow("a", None, "4", 2, tmp_path / "t.csv"), TextRow("b", None, "1.5", 3, tmp_path / "t.csv")]}
    assert label_vocabulary(rows, ["1.5", "4.0"], {"train": None}) == ["1.5", "4.0"]
    assert [r.label for r in rows["test"]] == ["4.0", "1.5"]


def test_hold_out_that_takes_a_whole_class_says_so(tmp_path):
    from fmctl.data.text import read_text_rows
    from fmctl.tasks.classification import label_vocabulary, read_splits

    data = DataConfig(validation_fraction=0.1, split_seed=5)  # seed 5 holds out rows 9 and 20 of 20
    path = tmp_path / "rare.csv"
    lines = ["text,label"] + [f"t{i},{'a' if i % 2 else 'b'}" for i in range(19)] + ["only one,refund_request"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths = {"train": path, "validation": None, "test": None}
    rows = read_splits(data, paths, lambda p: read_text_rows(p, data), ("train", "validation"))
    assert [r.line for r in rows["validation"]] == [10, 21]
    with pytest.raises(DataError) as info:
        label_vocabulary(rows, None, paths, data)
    assert str(info.value) == (f"{path}:21: the automatic validation hold-out (data.validation_fraction=0.1, "
                               f"data.split_seed=5) took every example of label 'refund_request' (1 row), leaving "
                               f"none to train on; give data.validation=FILE or add more rows of that label")
    two = tmp_path / "two.csv"
    two.write_text("text,label\nx,a\ny,b\n", encoding="utf-8")
    paths = {"train": two, "validation": None, "test": None}
    rows = read_splits(data, paths, lambda p: read_text_rows(p, data), ("train", "validation"))
    with pytest.raises(DataError, match=r"two.csv: only one label \('.'\) left for training: the automatic validation "
                                        r"hold-out \(data.validation_fraction=0.1, data.split_seed=5\) took every "
                                        r"example of '.'; give data.validation=FILE or add more rows"):
        label_vocabulary(rows, None, paths, data)


def test_text_task_prepare_matches_4_0_with_4_and_reports_empty_texts(tmp_path):
    """Through the task, as finetune runs it: a CSV written by pandas ('4.0') and a JSONL
    validation file (4) share labels, and the empty-text count reaches the printed warnings."""
    from fmctl.tasks import get_task
    from tests.helpers import TINY_TEXT, compose

    train = tmp_path / "train.csv"
    train.write_text("text,stars\n" + "".join(f"{'' if i == 3 else f'review {i}'},{(1, 4, 10)[i % 3]}.0\n"
                                              for i in range(12)), encoding="utf-8")
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps({"text": f"v {s}", "stars": s}) + "\n" for s in (10, 4, 1)),
                          encoding="utf-8")
    _, run = compose("text_csv", [f"data.train={train}", f"data.validation={validation}", "data.label_column=stars",
                                  *TINY_TEXT], tmp_path / "run")
    data = get_task(run.task).prepare(run)
    assert data.label_names == ["1", "4", "10"]
    assert [r.label for r in data.rows["validation"]] == ["10", "4", "1"]
    assert data.warnings == [f"{train}: 1 of 12 rows has an empty text in column 'text' (line 5); kept as empty "
                             f"inputs, drop or fill them if that is not intended"]
