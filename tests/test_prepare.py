"""`fmctl data prepare` on a corpus with the usual dirt: duplicates, near-duplicates,
control characters, odd Unicode, short fragments, mixed file formats."""
import dataclasses
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from fmctl.config.compose import schema_from_overrides
from fmctl.config.prepare_schema import PrepareConfig
from fmctl.data.prepare import load_prepared, prepare_corpus
from fmctl.errors import DataError, RunFolderError

WORDS = ("market team season goal player chip network cloud data model recipe oven sauce flight hotel beach "
         "river mountain village station library museum garden winter summer morning evening").split()
FILLER = "the of and to in was for on that with as by at from it an be this are or".split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS + FILLER) for _ in range(n))


def make_corpus(root, rng_seed=0):
    """Returns the folder and what the report must count."""
    rng = random.Random(rng_seed)
    originals = [sentence(rng, rng.randint(15, 40)) for _ in range(400)]
    expected = {"short": 7, "exact": 30, "near": 25}
    exact_copies = [f"  {d.upper()}  " for d in originals[:expected["exact"]]]      # case and spacing only
    near_copies = []
    for d in originals[100:100 + expected["near"]]:
        near_copies.append(d + " zebra")                                               # Jaccard ~0.95
    (root / "lines.txt").write_text("\n".join(originals[:200] + exact_copies + ["tiny"] * 4) + "\n", encoding="utf-8")
    paragraphs = "\n\n".join(d.replace(" of ", " of\n", 1) for d in originals[200:300])
    (root / "paragraphs.txt").write_text(paragraphs + "\n\nab\n\nxy\n", encoding="utf-8")
    web = originals[300:] + near_copies + ["hi"]
    expected["normalized"] = sum("the" in d for d in web)   # a full-width 'ｔｈｅ' each
    expected["control"] = len(web)                          # a BEL and a zero-width space each
    with gzip.open(root / "web.jsonl.gz", "wt", encoding="utf-8") as handle:
        for d in web:
            handle.write(json.dumps({"text": d.replace("the", "ｔｈｅ", 1) + "\x07\u200b", "url": "x"}) + "\n")
    return expected, originals


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    expected, originals = make_corpus(root)
    out = root.parent / (root.name + "-prepared")
    cfg = schema_from_overrides(PrepareConfig, [f"input={root}", f"out={out}", "tokenizer.vocab_size=300",
                                                "validation_fraction=0.1", "shard_tokens=4000", "workers=2"])
    from rich.console import Console

    result = prepare_corpus(cfg, Console(quiet=True))
    return root, out, cfg, result, expected, originals


def test_report_counts_every_step(corpus):
    _, _, _, result, expected, originals = corpus
    report = result.report
    assert report["files"] == 3
    assert report["documents_in"] == len(originals) + expected["exact"] + expected["near"] + expected["short"]
    assert report["removed_by_min_chars"] == expected["short"]
    assert report["removed_exact_duplicates"] == expected["exact"]
    assert report["removed_near_duplicates"] == expected["near"]
    kept = report["documents_train"] + report["documents_validation"]
    assert kept == report["documents_in"] - expected["short"] - expected["exact"] - report["removed_near_duplicates"]
    assert report["documents_validation"] == kept // 10
    assert report["changed_by_normalize"] == expected["normalized"]
    assert report["changed_by_strip_control"] == expected["control"]


def test_shards_hold_the_cleaned_documents(corpus):
    from transformers import AutoTokenizer

    _, out, _, _, _, originals = corpus
    meta, shards = load_prepared(out)
    assert meta["dtype"] == "uint16" and len(shards["train"]) > 1  # shard_tokens forces several shards
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    shard = shards["train"][0]
    first = np.asarray(shard.tokens[: shard.doc_ends[0]])
    assert first[-1] == meta["separator_id"]
    assert tokenizer.decode(first[:-1].tolist()) == originals[0]  # round trip (lower-cased WordPiece)
    text = " ".join(tokenizer.decode(np.asarray(s.tokens).tolist()) for s in shards["train"])
    assert "\x07" not in text and "zebra" not in text and "ｔｈｅ" not in text
    total = sum(len(s.tokens) for s in shards["train"])
    assert total == json.loads((out / "report.json").read_text())["tokens_train"]


def test_second_run_reuses_and_other_settings_refuse_to_clobber(corpus):
    from rich.console import Console

    root, out, cfg, result, _, _ = corpus
    again = prepare_corpus(cfg, Console(quiet=True))
    assert again.cached and again.report == result.report
    changed = schema_from_overrides(PrepareConfig, [f"input={root}", f"out={out}", "tokenizer.vocab_size=250"])
    with pytest.raises(RunFolderError, match="other inputs or settings"):
        prepare_corpus(changed, Console(quiet=True))


def test_worker_count_does_not_change_the_result(corpus, tmp_path):
    from rich.console import Console

    root, out, _, _, _, _ = corpus
    cfg = schema_from_overrides(PrepareConfig, [f"input={root}", f"out={tmp_path / 'one'}", "tokenizer.vocab_size=300",
                                                "validation_fraction=0.1", "shard_tokens=4000", "workers=1"])
    prepare_corpus(cfg, Console(quiet=True))
    ours = json.loads((tmp_path / "one" / "prepared.json").read_text())["shards"]
    theirs = json.loads((out / "prepared.json").read_text())["shards"]
    assert [s["blake2b"] for s in ours] == [s["blake2b"] for s in theirs]


def test_truncated_or_corrupt_shards_are_named(corpus, tmp_path):
    import shutil

    _, out, _, _, _, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / "train_00001.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train_00001.bin: checksum mismatch"):
        load_prepared(copy)
    shard.write_bytes(bytes(data[:-6]))
    with pytest.raises(DataError, match="train_00001.bin: .* bytes, expected .*truncated"):
        load_prepared(copy, verify=False)


def test_everything_removed_names_the_rule(tmp_path):
    from rich.console import Console

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "short.txt").write_text("a\nbb\nccc\n", encoding="utf-8")
    cfg = schema_from_overrides(PrepareConfig, [f"input={tmp_path / 'in'}", f"out={tmp_path / 'out'}"])
    with pytest.raises(DataError, match=r"every one of 3 documents was removed \(most by clean.min_chars\)"):
        prepare_corpus(cfg, Console(quiet=True))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))


def lines_of(rng, n):
    return [sentence(rng, 12) for _ in range(n)]


@pytest.mark.parametrize("layout, mode", [
    ("one per line, trailing blank lines", "line"),
    ("one per line, leading blank lines", "line"),
    ("one per line, a stray blank line in the middle", "line"),
    ("one per line, a blank line every 80 lines", "line"),
    ("hard-wrapped paragraphs", "paragraph"),
    ("single-line paragraphs", "paragraph"),
    ("two short paragraphs", "line"),
])
def test_txt_auto_mode_needs_recurring_blank_lines(tmp_path, layout, mode):
    from fmctl.data.corpus import txt_documents_mode

    rng = random.Random(1)
    body = lines_of(rng, 300)
    text = {
        "one per line, trailing blank lines": "\n".join(body) + "\n\n\n",
        "one per line, leading blank lines": "\n\n" + "\n".join(body) + "\n",
        "one per line, a stray blank line in the middle": "\n".join(body[:150]) + "\n\n" + "\n".join(body[150:]),
        "one per line, a blank line every 80 lines": "\n\n".join("\n".join(body[i:i + 80]) for i in range(0, 300, 80)),
        "hard-wrapped paragraphs": "\n\n".join("\n".join(body[i:i + 6]) for i in range(0, 300, 6)) + "\n\n",
        "single-line paragraphs": "\n\n".join(body),
        "two short paragraphs": "\n".join(body[:3]) + "\n\n" + "\n".join(body[3:6]) + "\n",
    }[layout]
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    assert txt_documents_mode(path, "auto") == mode
    assert txt_documents_mode(path, "paragraph") == "paragraph"  # an explicit setting is never second-guessed


def test_txt_auto_mode_reads_only_the_head_and_ignores_a_cut_line(tmp_path):
    """Blank lines beyond the first 64 KB do not count (the file is streamed), and the
    sample's possibly cut last line is not mistaken for a block."""
    from fmctl.data.corpus import TXT_SAMPLE_CHARS, txt_documents_mode

    rng = random.Random(2)
    head = "\n".join(lines_of(rng, 2000))
    assert len(head) > TXT_SAMPLE_CHARS
    path = tmp_path / "big.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(head + "\n\n" + "\n\n".join(lines_of(rng, 50)))
    assert txt_documents_mode(path, "auto") == "line"


def test_prepare_records_the_txt_mode_of_each_file(tmp_path):
    from rich.console import Console

    from fmctl.data.prepare import summary_lines

    rng = random.Random(3)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "lines.txt").write_text("\n".join(lines_of(rng, 300)) + "\n\n\n", encoding="utf-8")
    wrapped = ["\n".join(lines_of(rng, 4)) for _ in range(40)]
    (tmp_path / "in" / "wrapped.txt").write_text("\n\n".join(wrapped) + "\n", encoding="utf-8")
    cfg = schema_from_overrides(PrepareConfig, [f"input={tmp_path / 'in'}", f"out={tmp_path / 'out'}",
                                                "tokenizer.vocab_size=200", "dedup.near=false", "workers=1"])
    report = prepare_corpus(cfg, Console(quiet=True)).report
    assert report["documents_in"] == 300 + 40
    assert {Path(f).name: m for f, m in report["txt_mode"].items()} == {"lines.txt": "line", "wrapped.txt": "paragraph"}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["txt_mode"] == report["txt_mode"]
    assert summary_lines(report)[0] == (".txt documents (auto): one document per line: lines.txt; blank-line-separated "
                                        "paragraphs: wrapped.txt; set txt_mode=line|paragraph to choose")
    forced = schema_from_overrides(PrepareConfig, [f"input={tmp_path / 'in'}", f"out={tmp_path / 'forced'}",
                                                   "tokenizer.vocab_size=200", "dedup.near=false", "workers=1",
                                                   "txt_mode=line"])
    report = prepare_corpus(forced, Console(quiet=True)).report
    assert report["documents_in"] == 300 + 40 * 4
    assert set(report["txt_mode"].values()) == {"line"}


def test_corpus_split_by_the_old_auto_rule_is_not_reused(tmp_path):
    """Output the old rule may have got wrong is named, not silently reused."""
    from rich.console import Console

    from fmctl.data.prepare import fingerprint

    rng = random.Random(4)
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(lines_of(rng, 200)) + "\n", encoding="utf-8")
    cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={tmp_path / 'out'}",
                                                "tokenizer.vocab_size=200", "dedup.near=false", "workers=1"])
    prepare_corpus(cfg, Console(quiet=True))
    meta_file = tmp_path / "out" / "prepared.json"
    meta = json.loads(meta_file.read_text())
    meta["fingerprint"] = fingerprint(cfg, [corpus.resolve()], txt_auto_rule=1)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(RunFolderError, match="older fmctl whose txt_mode=auto .* pass overwrite=true"):
        prepare_corpus(cfg, Console(quiet=True))


@pytest.mark.parametrize("damage", ["tokenizer folder deleted", "tokenizer file deleted", "tokenizer file edited",
                                    "index deleted", "index junk", "report deleted"])
def test_same_command_rebuilds_a_damaged_corpus(corpus, tmp_path, damage):
    """'Up to date' means every file pretraining reads is there and intact, as for shards."""
    import shutil

    from rich.console import Console

    root, out, cfg, result, _, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = {"tokenizer folder deleted": copy / "tokenizer", "tokenizer file deleted": copy / "tokenizer" / "tokenizer.json",
              "tokenizer file edited": copy / "tokenizer" / "tokenizer_config.json",
              "index deleted": copy / "train_00000.idx.npy", "index junk": copy / "train_00000.idx.npy",
              "report deleted": copy / "report.json"}[damage]
    if damage == "tokenizer folder deleted":
        shutil.rmtree(target)
    elif damage.endswith("deleted"):
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:-3] + b"xx\n")
    console = Console(record=True, width=200)
    again = prepare_corpus(dataclasses.replace(cfg, out=str(copy)), console)
    assert not again.cached and "preparing it again" in console.export_text()
    assert again.report["tokens_train"] == result.report["tokens_train"]
    load_prepared(copy)  # whole and verified again
    assert prepare_corpus(dataclasses.replace(cfg, out=str(copy)), Console(quiet=True)).cached


def test_document_index_and_tokenizer_problems_are_named(corpus, tmp_path):
    import shutil

    _, out, _, _, _, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "prepared.json").read_text())
    assert all(s["idx_blake2b"] for s in meta["shards"]) and "tokenizer.json" in meta["tokenizer_files"]
    index = copy / "train_00001.idx.npy"
    np.save(index, np.load(index)[:-1])  # a valid array that no longer matches the shard
    with pytest.raises(DataError, match="train_00001.idx.npy: checksum mismatch"):
        load_prepared(copy)
    with pytest.raises(DataError, match=r"train_00001.idx.npy: document index does not match the shard"):
        load_prepared(copy, verify=False)
    index.write_bytes(b"junk")
    with pytest.raises(DataError, match=r"train_00001.idx.npy: not a readable document index .*re-run fmctl data prepare"):
        load_prepared(copy, verify=False)
    index.unlink()
    with pytest.raises(DataError, match="train_00001.idx.npy: document index missing; re-run fmctl data prepare"):
        load_prepared(copy, verify=False)
    shutil.copy(out / "train_00001.idx.npy", index)
    (copy / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(DataError, match="tokenizer.json: tokenizer file missing; re-run fmctl data prepare"):
        load_prepared(copy, verify=False)
    shutil.rmtree(copy / "tokenizer")
    with pytest.raises(DataError, match="tokenizer: tokenizer folder missing"):
        load_prepared(copy, verify=False)


def test_corpus_prepared_before_index_checksums_still_loads(corpus, tmp_path):
    """prepared.json without idx_blake2b/tokenizer_files (older fmctl) loads; its junk index is still named."""
    import shutil

    _, out, _, _, _, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "prepared.json").read_text())
    for record in meta["shards"]:
        del record["idx_blake2b"]
    del meta["tokenizer_files"]
    (copy / "prepared.json").write_text(json.dumps(meta))
    load_prepared(copy)
    (copy / "train_00000.idx.npy").write_bytes(b"\x80\x04junk")
    with pytest.raises(DataError, match="train_00000.idx.npy: not a readable document index"):
        load_prepared(copy)


def fake_run_folder(root, with_tokenizer=True):
    """What fmctl finetune/pretrain leave: config.yaml and model/ (config.json, weights, tokenizer)."""
    from fmctl.data.tokenizer_training import train_tokenizer

    (root / "model").mkdir(parents=True)
    (root / "config.yaml").write_text("recipe: bert_mlm\n", encoding="utf-8")
    (root / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    if with_tokenizer:
        rng = random.Random(5)
        train_tokenizer([sentence(rng, 20) for _ in range(200)], "wordpiece", 150,
                        model_max_length=64).save_pretrained(root / "model")
    return root


def test_tokenizer_path_accepts_an_fmctl_run_folder(tmp_path):
    from rich.console import Console
    from transformers import AutoTokenizer

    run = fake_run_folder(tmp_path / "run")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines_of(random.Random(6), 100)), encoding="utf-8")
    cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={tmp_path / 'out'}", f"tokenizer.path={run}",
                                                "dedup.near=false", "workers=1"])
    prepare_corpus(cfg, Console(quiet=True))
    theirs = AutoTokenizer.from_pretrained(run / "model")
    assert AutoTokenizer.from_pretrained(tmp_path / "out" / "tokenizer").get_vocab() == theirs.get_vocab()
    meta = json.loads((tmp_path / "out" / "prepared.json").read_text())
    assert meta["tokenizer_source"] == str((run / "model").resolve())


@pytest.mark.parametrize("what, message", [
    ("run folder without a tokenizer", "holds no tokenizer files (tokenizer.json, tokenizer_config.json, vocab.txt, "
                                       "vocab.json); give a tokenizer folder, a save_pretrained model folder or an fmctl run folder"),
    ("empty folder", "holds no tokenizer files"),
    ("missing folder", "does not exist; give a tokenizer folder"),
    ("a file", "is not a folder"),
])
def test_tokenizer_path_without_a_tokenizer_is_one_line_before_any_work(tmp_path, what, message):
    from tests.test_bad_inputs import call_main

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines_of(random.Random(7), 50)), encoding="utf-8")
    spec = {"run folder without a tokenizer": lambda: fake_run_folder(tmp_path / "run", with_tokenizer=False),
            "empty folder": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
            "missing folder": lambda: tmp_path / "nowhere",
            "a file": lambda: corpus}[what]()
    code, out, err = call_main(["data", "prepare", f"input={corpus}", f"out={tmp_path / 'out'}", f"tokenizer.path={spec}"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: tokenizer.path: "), err
    assert message in lines[0] and "Traceback" not in out + err
    assert not (tmp_path / "out").exists()


def rich_texts(n=2000):
    import string

    rng = random.Random(8)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(20)) + " 0123456789 ,.;:!?" for _ in range(n)]


def test_vocab_note_says_why_the_vocabulary_is_not_the_size_asked_for():
    from fmctl.data.tokenizer_training import train_tokenizer, vocab_note

    texts = rich_texts()
    wordpiece = train_tokenizer(texts, "wordpiece", 300, 64)
    assert len(wordpiece) == 300 + 42  # 26 letters, 10 digits, 6 punctuation marks
    assert vocab_note("wordpiece", 300, wordpiece).startswith(
        "vocabulary: 342 tokens, not 300: WordPiece adds one '##' continuation piece per distinct character of the "
        "corpus (42 here)")
    assert vocab_note("bpe", 200, train_tokenizer(texts, "bpe", 200, 64)).startswith(
        "vocabulary: 258 tokens, not 200: byte-level BPE starts from 256 byte tokens and 2 special tokens")
    assert vocab_note("bpe", 300, train_tokenizer(texts, "bpe", 300, 64)) is None
    short = vocab_note("wordpiece", 730, train_tokenizer(rich_texts(40), "wordpiece", 730, 64))
    assert "(42 here)" in short and "; even so, the training documents offer no more pieces" in short
    tiny = ["a b c ab", "ab c"] * 5
    assert "fewer than the 400 asked for: the training documents offer no more pieces seen at least twice" in \
        vocab_note("bpe", 400, train_tokenizer(tiny, "bpe", 400, 64))


def test_prepare_reports_and_prints_the_vocab_note(corpus):
    from fmctl.data.prepare import summary_lines

    report = corpus[3].report
    assert report["vocab_size_requested"] == 300 and report["vocab_size"] != 300
    assert len(report["notes"]) == 1 and report["notes"][0].startswith(f"vocabulary: {report['vocab_size']} tokens")
    assert f"note: {report['notes'][0]}" in summary_lines(report)


def test_unreadable_prepared_json_is_named(corpus, tmp_path):
    import shutil

    from rich.console import Console

    _, out, cfg, _, _, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "prepared.json").write_text('{"shards": [{"name": "train_00000"}], "dtype": "uint16"}')
    with pytest.raises(DataError, match="prepared.json: not the prepared.json fmctl data prepare writes"):
        load_prepared(copy)
    (copy / "prepared.json").write_text("{not json")
    with pytest.raises(DataError, match=r"prepared.json: unreadable \(JSONDecodeError\)"):
        load_prepared(copy)
    with pytest.raises(RunFolderError, match="already holds an unreadable prepared.json; .* overwrite=true"):
        prepare_corpus(dataclasses.replace(cfg, out=str(copy)), Console(quiet=True))


def test_csv_without_the_text_column_names_prepare_own_key(tmp_path):
    from tests.test_bad_inputs import call_main

    (tmp_path / "notes.csv").write_text("id,body\n1,hello there this is a body\n", encoding="utf-8")
    code, out, err = call_main(["data", "prepare", f"input={tmp_path / 'notes.csv'}", f"out={tmp_path / 'out'}"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "no column 'text' for text_column" in lines[0] and "data.text_column" not in lines[0]
