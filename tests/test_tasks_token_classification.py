"""Token classification end to end: CoNLL and JSONL in, entity F1 that beats a
dictionary baseline (the ambiguous word needs context), eval files, and a model/ that
transformers' AutoModelForTokenClassification reloads with the same predictions."""
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from fmctl import pipeline
from fmctl.config.saved_runs import load_run_config
from tests.helpers import finetune, read_jsonl
from tests.task_data import TINY, write_conll, write_tagged_jsonl

STEPS = ["trainer.max_steps=300", "trainer.batch_size=16", "optim.lr=3e-3", "trainer.eval_every=100",
         "data.max_length=48", "trainer.log_every=10"]


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    train, test = write_conll(root / "train.conll", 600, seed=1), write_conll(root / "test.conll", 150, seed=2)
    result = finetune("ner_conll", [f"data.train={train}", f"data.test={test}", *TINY, *STEPS], root / "run")
    raw, run = load_run_config(result.run_dir, [])
    report = pipeline.evaluate_run(result.run_dir, run, raw, console=Console(file=open(os.devnull, "w")))
    return result, report, train


def dictionary_baseline(train_path, test_rows):
    """Each word's most frequent training tag: what a model that ignores context gets."""
    from seqeval.metrics import f1_score

    from fmctl.config.schema import DataConfig
    from fmctl.data.conll import read_token_rows

    counts: dict[str, Counter] = {}
    for row in read_token_rows(train_path, DataConfig()):
        for word, tag in zip(row.tokens, row.tags):
            counts.setdefault(word, Counter())[tag] += 1
    predicted = [[counts[w].most_common(1)[0][0] if w in counts else "O" for w in r["tokens"]] for r in test_rows]
    return f1_score([r["tags"] for r in test_rows], predicted)


def test_entity_f1_beats_a_context_free_baseline(ner):
    result, report, train = ner
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    baseline = dictionary_baseline(train, rows)
    assert baseline < 0.97  # 'jordan' is a person or a place depending on the word before it
    assert report["f1"] > baseline and report["f1"] > 0.97, (report, baseline)
    assert result.metrics["test/f1"] == pytest.approx(report["f1"])
    jordans = [(r["tags"][i], r["predictions"][i]) for r in rows for i, w in enumerate(r["tokens"]) if w == "jordan"]
    assert len(jordans) > 10 and sum(g == p for g, p in jordans) / len(jordans) > 0.8  # context-free: 0.5


def test_eval_files_are_per_word(ner):
    result, report, _ = ner
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    assert len(rows) == report["num_examples"] == 150
    assert all(len(r["tokens"]) == len(r["tags"]) == len(r["predictions"]) for r in rows)
    assert report["num_words"] == sum(len(r["tokens"]) for r in rows)
    assert set(report["per_entity"]) == {"PER", "LOC", "ORG"}
    saved = json.loads((result.run_dir / "eval" / "metrics.json").read_text())
    assert saved["f1"] == pytest.approx(report["f1"]) and saved["split"] == "test"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["label_names"] == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "O"]


def test_model_reloads_as_token_classifier_with_same_predictions(ner):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    result, _, _ = ner
    model_dir = result.run_dir / "model"
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert type(model).__name__ == "BertForTokenClassification"
    assert model.config.id2label[5] == "O" and model.config.label2id["B-PER"] == 2
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")[:20]
    for row in rows:
        enc = tokenizer(row["tokens"], is_split_into_words=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            ids = model(**enc).logits[0].argmax(-1).tolist()
        words, seen = [], set()
        for position, word in enumerate(enc.word_ids(0)):
            if word is not None and word not in seen:
                seen.add(word)
                words.append(model.config.id2label[ids[position]])
        assert words == row["predictions"]


def test_jsonl_with_gpt_and_pos_tags_reports_accuracy(tmp_path):
    """Tags without B-/I- prefixes are not entities: word accuracy and the macro-F1 over
    tags are reported, no entity F1."""
    path = write_tagged_jsonl(tmp_path / "train.jsonl", 300, seed=3)
    pos = tmp_path / "pos.jsonl"
    with open(pos, "w", encoding="utf-8") as handle:
        for row in read_jsonl(path):
            handle.write(json.dumps({"words": row["tokens"], "pos": ["NOUN" if t != "O" else "X" for t in row["tags"]]})
                         + "\n")
    result = finetune("ner_conll", [f"data.train={pos}", "data.tokens_column=words", "data.tags_column=pos",
                                    "backbone=gpt", *TINY, *STEPS, "trainer.max_steps=40"], tmp_path / "run")
    assert "val/f1" not in result.metrics
    assert result.metrics["val/accuracy"] > 0.9, result.metrics  # majority tag 'X' is about 0.7
    assert result.metrics["val/macro_f1"] > 0.85, result.metrics


def test_words_past_max_length_are_predicted_outside(tmp_path):
    """Words the tokenizer cut off still get a prediction ('O'), so long sentences are
    scored on every word, and the run says how many."""
    from fmctl.data.alignment import NO_WORD
    from fmctl.tasks.token_classification import TaggingMetrics
    from fmctl.data.conll import TokenRow
    import torch

    rows = [TokenRow(["alice", "met", "bob", "in", "paris"], ["B-PER", "O", "B-PER", "O", "B-LOC"], 1, tmp_path)]
    names = ["B-LOC", "B-PER", "O"]
    metrics = TaggingMetrics(names, rows, entities=True, fill=2)
    # [CLS] ali ##ce met bob [SEP]: the model saw three words, the last two were cut.
    logits = torch.full((1, 6, 3), -5.0)
    for position, label in ((1, 1), (3, 2), (4, 1)):
        logits[0, position, label] = 5.0
    batch = {"word_index": torch.tensor([[NO_WORD, 0, NO_WORD, 1, 2, NO_WORD]]), "sentence": torch.tensor([0]),
             "labels": torch.zeros((1, 6), dtype=torch.long)}
    metrics.update(logits, batch, None)
    assert metrics.predicted[0] == ["B-PER", "O", "B-PER", "O", "O"]
    report = metrics.report()
    assert report["precision"] == 1.0 and report["recall"] == pytest.approx(2 / 3)


def make_roberta_folder(folder, texts):
    """A RoBERTa-style folder as roberta-base ships: byte-level BPE saved with
    add_prefix_space=False (words inside text carry 'Ġ', a text's first word does not)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                     cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                     add_prefix_space=False, model_max_length=64)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=70, pad_token_id=1,
                               type_vocab_size=1)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_byte_level_words_keep_their_space_marker_in_training_and_serving(tmp_path):
    """A RoBERTa tokenizer saved with add_prefix_space=False encodes pre-split words glued
    together ('met' instead of 'Ġmet') and transformers 5 no longer refuses it: fmctl must
    feed every word with its space marker, save model/ that way, and ONNX serving must
    encode words as the run folder does."""
    from fmctl.config.schema import DataConfig
    from fmctl.data.conll import read_token_rows
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from fmctl.predict import encode
    from fmctl.predict.run import predict
    from fmctl.tasks.token_classification import TokenClassification
    from tests.helpers import compose

    train = write_conll(tmp_path / "train.conll", 120, seed=1)
    texts = [" ".join(r.tokens) for r in read_token_rows(train, DataConfig())]
    folder = make_roberta_folder(tmp_path / "roberta", texts)
    overrides = [f"data.train={train}", f"backbone.pretrained={folder}", "data.max_length=48",
                 "trainer.progress=off", "trainer.precision=fp32", "trainer.num_threads=1", "trainer.max_steps=4",
                 "trainer.batch_size=16", *[s for s in STEPS if s.startswith("trainer.eval")]]
    _, run = compose("ner_conll", overrides, tmp_path / "prepared")
    task = TokenClassification(run.task)
    data = task.prepare(run, splits=("train",))
    tokenizer = data.preprocessor
    for feature in list(data.train.features)[:20]:
        pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
        starts = [pieces[i] for i, w in enumerate(feature["word_index"]) if w >= 0]
        assert len(starts) > 2 and all(p.startswith("Ġ") for p in starts[1:]), pieces

    result = finetune("ner_conll", overrides, tmp_path / "run")
    saved = json.loads((result.run_dir / "model" / "tokenizer.json").read_text())
    assert saved["pre_tokenizer"]["type"] == "ByteLevel" and saved["pre_tokenizer"]["add_prefix_space"] is True
    exported = export_run(result.run_dir, ExportOptions(fmt="onnx", exporter="torchscript"), log=lambda _l: None)
    names = ["input_ids", "attention_mask"]
    words = [{"text": ["alice", "met", "jordan", "in", "paris", "today", "."]}, {"text": "bob visited josé near rome"}]
    light = encode.LightWordEncoder(exported.folder, exported.manifest["preprocessing"], names)(words)
    from fmctl.models.text import load_tokenizer_only

    reference = encode.ReferenceWordEncoder(load_tokenizer_only(result.run_dir / "model"), 48, names)(words)
    assert light[2] == reference[2]
    for name in names:
        width = reference[0][name].shape[1]
        assert (light[0][name][:, :width] == reference[0][name]).all(), name
    sentences = tmp_path / "new.jsonl"
    sentences.write_text("".join(json.dumps({"tokens": w["text"] if isinstance(w["text"], list)
                                             else w["text"].split()}) + "\n" for w in words), encoding="utf-8")
    from_run = predict(result.run_dir, input_file=sentences, out=tmp_path / "run.jsonl", log=lambda _l: None)
    from_onnx = predict(exported.folder, input_file=sentences, out=tmp_path / "onnx.jsonl", log=lambda _l: None)
    assert from_run.predicted == from_onnx.predicted == 2
    assert [r["tags"] for r in read_jsonl(tmp_path / "run.jsonl")] == \
        [r["tags"] for r in read_jsonl(tmp_path / "onnx.jsonl")]


def code_token_rows(source: Path) -> list[dict]:
    """Real Python source cut into logical lines: each token's text and its kind (NAME,
    KEYWORD, OP, NUMBER, STRING, COMMENT), the plain (non-entity) tag set of code tagging."""
    import io
    import keyword
    import token
    import tokenize

    rows, words, tags = [], [], []
    for tok in tokenize.generate_tokens(io.StringIO(source.read_text(encoding="utf-8")).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER) and words:
            rows.append({"tokens": words, "tags": tags})
            words, tags = [], []
        elif tok.type in (token.NAME, token.OP, token.NUMBER, token.STRING, tokenize.COMMENT) and tok.string.strip():
            kind = "KEYWORD" if tok.type == token.NAME and keyword.iskeyword(tok.string) else token.tok_name[tok.type]
            words.append(tok.string.split()[0][:40])
            tags.append(kind)
    return rows


def test_plain_tags_report_macro_f1_per_tag_scores_and_a_confusion_matrix(tmp_path):
    """Code token kinds (the standard library's own source) are plain tags: the run
    monitors macro-F1 over tags, and eval writes per-tag scores and a confusion matrix
    that recount from its predictions."""
    import random
    import textwrap

    from sklearn.metrics import f1_score

    rows = code_token_rows(Path(textwrap.__file__)) + code_token_rows(Path(json.__file__).parent / "decoder.py")
    random.Random(0).shuffle(rows)
    for name, part in (("train", rows[:400]), ("test", rows[400:520])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    result = finetune("ner_conll", [f"data.train={tmp_path / 'train.jsonl'}", f"data.test={tmp_path / 'test.jsonl'}",
                                    *TINY, *STEPS, "trainer.max_steps=60"], tmp_path / "run")
    assert "val/f1" not in result.metrics and result.metrics["test/macro_f1"] > 0.5, result.metrics
    raw, run = load_run_config(result.run_dir, [])
    report = pipeline.evaluate_run(result.run_dir, run, raw, console=Console(file=open(os.devnull, "w")))
    assert set(report["per_tag"]) >= {"NAME", "OP", "KEYWORD", "STRING"}
    predictions = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    gold = [t for p in predictions for t in p["tags"]]
    predicted = [t for p in predictions for t in p["predictions"]]
    assert report["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))
    matrix = report["confusion_matrix"]
    assert sum(map(sum, matrix)) == len(gold) and (result.run_dir / "eval" / "confusion_matrix.png").is_file()
    tags = json.loads((result.run_dir / "model" / "config.json").read_text())["id2label"]
    name = next(int(k) for k, v in tags.items() if v == "NAME")
    assert matrix[name][name] == sum(g == p == "NAME" for g, p in zip(gold, predicted))


def test_macro_f1_over_plain_tags_by_hand():
    from fmctl.tasks.token_classification import per_tag_report, tagging_scores

    gold = [["NAME", "OP", "NAME"], ["NUMBER"]]
    predicted = [["NAME", "NAME", "NAME"], ["NUMBER"]]
    # NAME: p 2/3 r 1 f1 0.8; OP: p 0 r 0 f1 0; NUMBER: f1 1 -> macro (0.8 + 0 + 1) / 3
    assert tagging_scores(gold, predicted, entities=False)["macro_f1"] == pytest.approx(0.6)
    report = per_tag_report(gold, predicted, ["NAME", "NUMBER", "OP"])
    assert report["per_tag"]["NAME"]["precision"] == pytest.approx(2 / 3)
    assert report["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [1, 0, 0]]
