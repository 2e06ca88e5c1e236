"""Readers on files that look like users' files, and their error messages."""
import gzip
import json

import pytest

from fmctl.config.schema import DataConfig
from fmctl.data.readers import read_rows
from fmctl.data.splits import split_off, subset
from fmctl.data.text import read_text_rows
from fmctl.errors import DataError
from tests.helpers import write_reviews_csv


def test_csv_with_bom_padded_header_quotes_and_newlines(tmp_path):
    path = write_reviews_csv(tmp_path / "r.csv", 50, seed=0)
    rows = read_text_rows(path, DataConfig(text_column="review text", label_column="sentiment"))
    assert len(rows) == 50
    assert any("\n" in r.text for r in rows)  # embedded newlines survived quoting
    assert {r.label for r in rows} == {"positive", "negative"}
    assert rows[0].line >= 2


def test_tsv_gzip_jsonl_and_parquet_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"text": f"example {i}", "label": i % 3} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    with gzip.open(tmp_path / "d.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.write("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    results = [read_text_rows(tmp_path / name, DataConfig()) for name in ("d.jsonl", "d.tsv.gz", "d.parquet")]
    for rows in results:
        assert [(r.text, r.label) for r in rows] == [(r["text"], str(r["label"])) for r in records]


def test_missing_column_names_file_and_suggests(tmp_path):
    path = write_reviews_csv(tmp_path / "r.csv", 5, seed=0)
    with pytest.raises(DataError) as info:
        read_rows(path, {"text": "review txt", "label": "sentiment"})
    assert str(path) in str(info.value) and "did you mean 'Review Text'" in str(info.value)


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nfine,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_rows(path, {"text": "text", "label": "label"})
    assert f"{path}:3: not UTF-8" in str(info.value)


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    (tmp_path / "header.csv").write_text("text,label\n", encoding="utf-8")
    for name in ("empty.csv", "header.csv"):
        with pytest.raises(DataError, match="no examples"):
            read_rows(tmp_path / name, {"text": "text"})


def test_bad_json_line_and_empty_label(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_rows(tmp_path / "bad.jsonl", {"text": "text", "label": "label"})
    (tmp_path / "nolabel.csv").write_text("text,label\nhello,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nolabel.csv:2: empty label"):
        read_text_rows(tmp_path / "nolabel.csv", DataConfig())


def test_split_and_subset_are_deterministic_and_disjoint():
    items = list(range(1000))
    a = split_off(items, 0.2, seed=5)
    b = split_off(items, 0.2, seed=5)
    assert a == b and len(a[1]) == 200 and not set(a[0]) & set(a[1])
    assert split_off(items, 0.2, seed=6)[1] != a[1]
    small = subset(items, 50, seed=1)
    assert small == subset(items, 50, seed=1) and len(small) == 50 and small == sorted(small)
    assert max(small) > 500  # not simply the head of the file


def test_a_used_column_named_twice_is_an_error_an_unused_one_is_ignored(tmp_path):
    path = tmp_path / "dupcols.csv"
    path.write_text("id,text,label,text\n1,good,pos,\n2,bad,neg,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dupcols.csv: column 'text' appears twice in the header \(columns 2 and 4\)"):
        read_text_rows(path, DataConfig())
    padded = tmp_path / "padded.csv"  # ' Label ' and 'label' are the same name to the matcher
    padded.write_text("text,label,notes, label ,notes\ngood,pos,x,,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"column 'label' appears twice in the header \(columns 2 and 4\)"):
        read_text_rows(padded, DataConfig())
    unused = tmp_path / "unused.csv"
    unused.write_text("text,label,notes,notes\ngood,pos,a,b\nbad,neg,c,d\n", encoding="utf-8")
    assert [(r.text, r.label) for r in read_text_rows(unused, DataConfig())] == [("good", "pos"), ("bad", "neg")]
    cases = tmp_path / "cases.csv"
    cases.write_text("Text,text ,label\na,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data.text_column 'TEXT' matches 'Text' \(column 1\) and 'text' \(column 2\)"):
        read_text_rows(cases, DataConfig(text_column="TEXT"))
    assert read_text_rows(cases, DataConfig())[0].text == "b"  # an exact name is not ambiguous


def test_a_csv_with_another_delimiter_says_which(tmp_path):
    semi = tmp_path / "reviews_semi.csv"
    semi.write_text("text;label\ngood, really;pos\nbad;neg\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_text_rows(semi, DataConfig())
    assert str(info.value).startswith(f"{semi}: the header 'text;label' is one column that looks ';'-delimited; "
                                      f"re-save it with commas")
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("text\tlabel\ngood\tpos\n", encoding="utf-8")
    with pytest.raises(DataError, match="looks tab-delimited; name the file .tsv or set data.format=tsv"):
        read_text_rows(tabs, DataConfig())
    assert read_text_rows(tabs, DataConfig(format="tsv"))[0].text == "good"
    one_column = tmp_path / "corpus.csv"  # one column whose name holds ';' but is the one asked for
    one_column.write_text("a;b\nsome text\n", encoding="utf-8")
    assert read_rows(one_column, {"text": "a;b"})[0]["text"] == "some text"


def test_jsonl_columns_come_from_every_record(tmp_path):
    sparse = tmp_path / "sparse.jsonl"
    sparse.write_text('{"id": 1, "label": "a"}\n{"id": 2, "text": "x", "label": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"sparse.jsonl:1: row has no field 'text' \(data.text_column\)"):
        read_text_rows(sparse, DataConfig())
    late = tmp_path / "late.jsonl"  # a field first seen on line 2 is a column; line 1 lacks it
    late.write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": "b", "extra": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"late.jsonl:1: row has no field 'extra'"):
        read_rows(late, {"extra": "extra"})
    with pytest.raises(DataError, match=r"no column 'body' for data.text_column; columns are: text, label, extra"):
        read_rows(late, {"text": "body"})


def test_text_cells_holding_objects_lists_or_booleans_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    nested = tmp_path / "nested.jsonl"
    nested.write_text(json.dumps({"review": {"text": "great", "stars": 5}, "label": "pos"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nested.jsonl:1: column 'review' holds an object, not text"):
        read_text_rows(nested, DataConfig(text_column="review"))
    for value, kind in ((["a", "b"], "a list"), (True, "a boolean")):
        path = tmp_path / "cells.jsonl"
        path.write_text(json.dumps({"text": "fine", "label": "a"}) + "\n" + json.dumps({"text": value, "label": "b"}),
                        encoding="utf-8")
        with pytest.raises(DataError, match=rf"cells.jsonl:2: column 'text' holds {kind}, not text"):
            read_text_rows(path, DataConfig())
    pq.write_table(pa.Table.from_pylist([{"text": ["a"], "label": "x"}]), tmp_path / "lists.parquet")
    with pytest.raises(DataError, match=r"lists.parquet:1: column 'text' holds a list, not text"):
        read_text_rows(tmp_path / "lists.parquet", DataConfig())
    (tmp_path / "label.jsonl").write_text(json.dumps({"text": "t", "label": ["a", "b"]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"label.jsonl:1: column 'label' holds a list, not a label; for several"):
        read_text_rows(tmp_path / "label.jsonl", DataConfig())
    (tmp_path / "numbers.jsonl").write_text(json.dumps({"text": 12.5, "label": True}) + "\n", encoding="utf-8")
    (row,) = read_text_rows(tmp_path / "numbers.jsonl", DataConfig())
    assert (row.text, row.label) == ("12.5", "True")  # numbers read as text; true/false are class names


def test_empty_texts_are_counted_and_an_empty_column_is_an_error(tmp_path):
    some = tmp_path / "some.csv"
    some.write_text("text,pair,label\ngood,x,a\n,y,b\n   ,z,a\nfine,,b\n", encoding="utf-8")
    warnings: list[str] = []
    rows = read_text_rows(some, DataConfig(text_pair_column="pair"), warnings=warnings)
    assert len(rows) == 4  # kept: evaluation scores every row of the file
    assert warnings == [f"{some}: 2 of 4 rows have an empty text in column 'text' (lines 3, 4); kept as empty "
                        f"inputs, drop or fill them if that is not intended",
                        f"{some}: 1 of 4 rows has an empty text in column 'pair' (line 5); kept as empty "
                        f"inputs, drop or fill them if that is not intended"]
    empty = tmp_path / "empty.csv"
    empty.write_text("id,text,label\n1,,a\n2, ,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.csv: column 'text' is empty in every row; point data.text_column"):
        read_text_rows(empty, DataConfig())
