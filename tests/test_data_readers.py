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
