"""Bad input: one line naming the file or key, a non-zero exit, no traceback, and no
change to an existing run folder. The catalogue is data: one row per case."""
import hashlib
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from rich.console import Console

from tests.helpers import TINY_TEXT, run_cli, write_reviews_csv, write_shapes_folder

TEXT = ["recipe=text_csv", "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT,
        "trainer.max_steps=2"]
IMAGES = ["recipe=image_folder", "backbone.image_size=16", "trainer.max_steps=2", "trainer.progress=off"]


def build_files(root: Path) -> dict[str, Path]:
    """Every broken file the catalogue needs, made once."""
    files = {"train": write_reviews_csv(root / "train.csv", 40, seed=1)}
    files["unseen_label"] = write_reviews_csv(root / "unseen.csv", 20, seed=2, labels=("positive", "neutral"))
    (root / "header_only.csv").write_text("Review Text ,Sentiment\n", encoding="utf-8")
    files["header_only"] = root / "header_only.csv"
    files["latin1"] = root / "latin1.csv"
    files["latin1"].write_bytes("Review Text ,Sentiment\nnice,positive\ncaf\xe9 cr\xe8me,negative\n".encode("latin-1"))
    images = write_shapes_folder(root / "images", per_class=6, seed=0)
    (images / "vertical" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    files["images"] = images
    truncated = write_shapes_folder(root / "truncated", per_class=6, seed=2)
    whole = (truncated / "horizontal" / "img_000.jpg").read_bytes()  # a JPEG: header intact, data cut
    (truncated / "horizontal" / "img_000.jpg").write_bytes(whole[: len(whole) // 2])
    files["truncated"] = truncated
    no_weights = root / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    files["no_weights"] = no_weights
    files["timm_vit"] = timm_folder(root / "timm_vit")
    files["images_ok"] = write_shapes_folder(root / "images_ok", per_class=6, seed=1)
    flat = root / "flat_images"
    flat.mkdir()
    for image in sorted((files["images_ok"] / "vertical").iterdir())[:3]:
        (flat / image.name).write_bytes(image.read_bytes())
    files["flat_images"] = flat
    (root / "empty_dir").mkdir()
    files["empty_dir"] = root / "empty_dir"
    files["bad_recipe"] = root / "broken.yaml"
    files["bad_recipe"].write_text("defaults:\n  - data: text_files\ntrainer:\n  max_steps: 3\n   batch_size: 4\n",
                                   encoding="utf-8")
    files["list_jsonl"] = root / "lists.jsonl"
    files["list_jsonl"].write_text('{"Review Text": "ok", "Sentiment": "positive"}\n["not", "an", "object"]\n',
                                   encoding="utf-8")
    files["ragged"] = root / "ragged.csv"
    files["ragged"].write_text("Review Text,Sentiment\ngood,positive\nbad, really bad,negative\n", encoding="utf-8")
    files["empty_label"] = root / "empty_label.csv"
    files["empty_label"].write_text("Review Text,Sentiment\ngood,positive\nbad,\n", encoding="utf-8")
    files["one_label"] = write_reviews_csv(root / "one_label.csv", 20, seed=3, labels=("positive",))
    build_table_traps(root, files)
    files.update(prepared_corpora(root))
    build_task_files(root, files)
    build_segmentation_files(root, files)
    files.update(customize_bases(root))
    return files


def timm_folder(folder: Path) -> Path:
    """A tiny ViT in timm's save_for_hf layout (config.json names an architecture, no model_type)."""
    import timm
    from timm.models._hub import save_for_hf

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=16,
                              depth=1, num_heads=2, num_classes=2)
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def build_table_traps(root: Path, files: dict[str, Path]) -> None:
    """Tables that used to train on the wrong thing: a header naming a column twice,
    an object in the text field, ';' as the delimiter, a first JSONL record without the
    text, an empty text column, a label list, and hold-outs that take a whole class."""
    def text(name: str, content: str) -> None:
        files[name.replace(".", "_")] = root / name
        (root / name).write_text(content, encoding="utf-8")

    text("dupcols.csv", "id,Review Text,Sentiment,Review Text\n1,good,positive,\n2,bad,negative,\n")
    text("nested.jsonl", json.dumps({"Review Text": {"text": "great", "stars": 5}, "Sentiment": "positive"}) + "\n")
    text("reviews_semi.csv", "Review Text;Sentiment\ngood, really;positive\nbad;negative\n")
    text("sparse.jsonl", '{"id": 1, "Sentiment": "positive"}\n{"id": 2, "Review Text": "bad", "Sentiment": "negative"}\n')
    text("no_text.csv", "Review Text,Sentiment\n,positive\n ,negative\n")
    text("list_label.jsonl", json.dumps({"Review Text": "good", "Sentiment": ["positive", "fun"]}) + "\n")
    # data.split_seed=5 holds out rows 9 and 20 of 20: the only refund_request is row 20 (line 21)
    text("rare.csv", "Review Text,Sentiment\n" + "".join(f"text {i},{'positive' if i % 2 else 'negative'}\n"
                                                         for i in range(19)) + "give my money back,refund_request\n")
    text("two_rows.csv", "Review Text,Sentiment\ngood,positive\nbad,negative\n")


def customize_bases(root: Path) -> dict[str, Path]:
    """fmctl customize bases: a tiny one-block BERT for the reviews' labels, and a teacher
    trained on other labels. Random weights, saved with save_pretrained."""
    from transformers import BertConfig, BertForSequenceClassification

    from fmctl.data.tokenizer_training import train_tokenizer

    tokenizer = train_tokenizer(["great product", "awful refund", "the box arrived"] * 10, "wordpiece", 120,
                                model_max_length=64)
    out = {}
    for name, labels in (("cz_base", ["negative", "positive"]), ("cz_teacher", ["a", "b", "c"])):
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=64, num_labels=len(labels),
                            id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                            pad_token_id=tokenizer.pad_token_id)
        BertForSequenceClassification(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        out[name] = root / name
    # the base's labels, another tokenizer: its token ids mean other words
    other = train_tokenizer(["quite another corpus of words", "with its own vocabulary"] * 10, "wordpiece", 110,
                            model_max_length=64)
    config = BertConfig(vocab_size=len(other), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
                        pad_token_id=other.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(root / "cz_other_tokenizer")
    other.save_pretrained(root / "cz_other_tokenizer")
    out["cz_other_tokenizer"] = root / "cz_other_tokenizer"
    return out


def prepared_corpora(root: Path) -> dict[str, Path]:
    """A prepared corpus, a copy with a truncated shard, and a model whose embedding is
    smaller than that corpus's vocabulary."""
    import shutil

    from rich.console import Console
    from transformers import BertConfig, BertForMaskedLM

    from fmctl.config.compose import schema_from_overrides
    from fmctl.config.prepare_schema import PrepareConfig
    from fmctl.data.prepare import prepare_corpus

    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(f"document number {i} talks about rivers and hills {i % 7}" for i in range(300)),
                      encoding="utf-8")
    cfg = schema_from_overrides(PrepareConfig, [f"input={corpus}", f"out={root / 'prepared'}", "dedup.near=false",
                                                "tokenizer.vocab_size=120", "validation_fraction=0.1"])
    prepared = prepare_corpus(cfg, Console(quiet=True)).out
    broken = root / "prepared_truncated"
    shutil.copytree(prepared, broken)
    shard = broken / "train_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-4])
    no_idx = root / "prepared_no_idx"
    shutil.copytree(prepared, no_idx)
    (no_idx / "train_00000.idx.npy").unlink()
    junk_idx = root / "prepared_junk_idx"
    shutil.copytree(prepared, junk_idx)
    (junk_idx / "train_00000.idx.npy").write_bytes(b"not an index\n")
    no_tokenizer = root / "prepared_no_tokenizer"
    shutil.copytree(prepared, no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    small = root / "small_vocab_bert"
    BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(small)
    return {"prepared": prepared, "prepared_truncated": broken, "small_vocab_bert": small, "prepared_no_idx": no_idx,
            "prepared_junk_idx": junk_idx, "prepared_no_tokenizer": no_tokenizer}


def build_segmentation_files(root: Path, files: dict[str, Path]) -> None:
    """images/ + masks/ folders with one flaw each: a mask of another size than its image,
    a value that is no class, an image without a mask."""
    import numpy as np
    from PIL import Image

    for name in ("seg_size", "seg_value", "seg_missing"):
        folder = root / name
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        for i in range(4):
            mask = np.zeros((8, 10), dtype=np.uint8)
            mask[2:6, 3:8] = 1
            if name == "seg_value" and i == 2:
                mask[0, 0] = 7
            size = (12, 8) if name == "seg_size" and i == 1 else (10, 8)
            Image.new("RGB", size, (20 * i, 90, 30)).save(folder / "images" / f"p{i}.jpg")
            if not (name == "seg_missing" and i == 3):
                Image.fromarray(mask).save(folder / "masks" / f"p{i}.png")
        files[name] = folder


def build_task_files(root: Path, files: dict[str, Path]) -> None:
    """Broken inputs of the downstream tasks (token classification, QA, regression,
    multi-label, translation)."""
    from tests.task_data import write_conll, write_multilabel_csv, write_parallel_tsv, write_scores_csv, write_squad

    def text(name: str, content: str) -> None:
        files[name.replace(".", "_")] = root / name
        (root / name).write_text(content, encoding="utf-8")

    files["conll"] = write_conll(root / "ok.conll", 30, seed=1)
    text("bad.conll", "alice B-PER\nmet O\n\nbob B-PER\nparis\n")
    text("unseen_tag.conll", "alice B-PER\nmet O\nrome B-MISC\n")
    text("columns.conll", "alice NNP B-PER\nmet VBD O\nparis B-LOC\n")
    text("tags.jsonl", '{"tokens": ["alice", "met"], "tags": ["B-PER", "O"]}\n{"tokens": ["bob"], "tags": ["B-PER", "O"]}\n')
    files["squad"] = write_squad(root / "ok.json", 20, seed=1, long_every=0)
    files["squad_v2"] = write_squad(root / "v2.json", 20, seed=1, v2=True, long_every=0)
    text("not_squad.json", '{"data": {"title": "x"}}')
    text("long_question.json", '{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "a code b", '
                               '"qas": [{"id": "q1", "question": "' + "why " * 40 + '?", "answers": [{"text": "b", '
                               '"answer_start": 7}]}]}]}]}')
    files["pairs"] = write_parallel_tsv(root / "pairs.tsv", 30, seed=1)
    text("empty_side.tsv", "source\ttarget\nwba wbe\tzib zob\nwbi\t  \n")
    text("no_tab.txt", "wba wbe\tzib zob\nwbi zub\n")
    files["scores"] = write_scores_csv(root / "scores.csv", 30, seed=1)
    text("text_score.csv", "review,score\ngreat,2\nawful,high\n")
    files["topics"] = write_multilabel_csv(root / "topics.csv", 30, seed=1)
    text("unknown_topic.csv", "text,topics\nbank loan,money\ngoal and rain,sports|weather\n")


NER = ["recipe=ner_conll", *TINY_TEXT, "trainer.max_steps=2"]
QA = ["recipe=qa_squad", *TINY_TEXT, "task.doc_stride=8", "trainer.max_steps=2"]
REGRESSION = ["recipe=regression_csv", *TINY_TEXT, "data.text_column=review", "data.label_column=score",
              "trainer.max_steps=2"]
MULTILABEL = ["recipe=multilabel_csv", *TINY_TEXT, "data.label_column=topics", "trainer.max_steps=2"]
TRANSLATION = ["recipe=translation_t5", *TINY_TEXT, "trainer.max_steps=2"]
CUSTOMIZE = ["customize", *TEXT, "data.train={train}", "base={cz_base}", "data.max_length=32"]

# (case id, arguments, text the one-line message must contain). {name} is a file from build_files;
# arguments start with the verb when it is not finetune.
SEGMENT = ["recipe=segment_folder", "data.label_names=[bg,leaf]", "trainer.max_steps=2", "trainer.progress=off"]
CASES = [
    ("segmentation mask of another size", [*SEGMENT, "data.train={seg_size}"], "seg_size/masks/p1.png: mask is 10x8 pixels but its image"),
    ("segmentation mask value", [*SEGMENT, "data.train={seg_value}"], "seg_value/masks/p2.png: value 7 is neither a class (0-1: bg, leaf) nor data.ignore_index (255)"),
    ("segmentation image without a mask", [*SEGMENT, "data.train={seg_missing}"], "seg_missing/images/p3.jpg: no mask with its stem in"),
    ("CvT depths transformers cannot build", ["recipe=cvt_digits", "backbone.depths=[1,1,3]"], "backbone.depths: stage 1 has 1 block, but transformers' CvT reads stage i's drop-path rate"),
    ("unknown key", [*TEXT, "data.train={train}", "trainer.max_stpes=3"], "trainer.max_stpes: unknown key (did you mean 'max_steps'?)"),
    ("wrong type", [*TEXT, "data.train={train}", "trainer.batch_size=big"], "trainer.batch_size: expected an integer, got 'big'"),
    ("unknown backbone option", [*TEXT, "data.train={train}", "backbone=bret"], "backbone: unknown option 'bret' (did you mean 'bert'?)"),
    ("unknown backbone name", [*TEXT, "data.train={train}", "backbone.name=gtp"], "backbone.name: unknown backbone 'gtp' (did you mean 'gpt'?)"),
    ("Adam betas out of range", [*TEXT, "data.train={train}", "optim.betas=[0.9,2]"], "optim.betas: expected two numbers in [0, 1)"),
    ("Adam betas of the wrong length", [*TEXT, "data.train={train}", "optim.betas=[0.9]"], "optim.betas: expected two numbers in [0, 1) (Adam's moment decays, e.g. [0.9,0.999]), got [0.9]"),
    ("unknown task", [*TEXT, "data.train={train}", "task=text_clasification"], "task: unknown option 'text_clasification' (did you mean 'text_classification'?)"),
    ("task/backbone mismatch", ["recipe=text_csv", "data.train={train}", "backbone=vit"], "task 'text_classification' needs backbone bert or gpt"),
    ("missing data file", [*TEXT, "data.train=nowhere/train.csv"], "nowhere/train.csv: file not found"),
    ("missing column", [*TEXT, "data.train={train}", "data.text_column=body"], "no column 'body' for data.text_column"),
    ("empty dataset", [*TEXT, "data.train={header_only}"], "header_only.csv: no examples"),
    ("label unseen in training", [*TEXT, "data.train={train}", "data.test={unseen_label}"], "label 'neutral' never appears in the training data"),
    ("corrupt image", [*IMAGES, "data.train={images}"], "broken.png: cannot read image"),
    ("truncated JPEG", [*IMAGES, "data.train={truncated}"], "truncated/horizontal/img_000.jpg: cannot read image (OSError: "),
    ("non-UTF-8 text", [*TEXT, "data.train={latin1}"], "latin1.csv:3: not UTF-8"),
    ("pretrained folder missing", [*TEXT, "data.train={train}", "backbone.pretrained=/no/such/model"], "backbone.pretrained: '/no/such/model' does not exist"),
    ("pretrained folder without weights", [*TEXT, "data.train={train}", "backbone.pretrained={no_weights}"], "has no weights"),
    ("hub id offline", [*TEXT, "data.train={train}", "backbone.pretrained=bert-base-uncased"], "pass the folder: backbone.pretrained=/path/to/folder"),
    ("timm hub id offline", [*IMAGES, "data.train={images_ok}", "backbone.pretrained=timm/vit_tiny_patch16_224"], "(offline); save it with timm's save_for_hf where you have network, then pass the folder: backbone.pretrained=/path/to/folder"),
    ("pretrained folder without tokenizer files", [*TEXT, "data.train={train}", "backbone.pretrained={small_vocab_bert}"], "small_vocab_bert' has no tokenizer files (tokenizer.json, vocab.txt, ...); add them or give backbone.tokenizer="),
    ("timm folder for a text backbone", [*TEXT, "data.train={train}", "backbone.pretrained={timm_vit}"], "timm_vit' is a timm image model; use backbone=vit (recipe=image_folder)"),
    ("timm folder with a tokenizer for a text backbone", [*TEXT, "data.train={train}", "backbone.pretrained={timm_vit}", "backbone.tokenizer={cz_base}"], "timm_vit' is a timm image model; use backbone=vit (recipe=image_folder)"),
    ("unknown recipe", ["recipe=bert_topic"], "unknown recipe 'bert_topic' (did you mean 'bert_topics'?); available:"),
    ("missing required path", ["recipe=text_csv"], "data.train: required"),
    ("bad override syntax", [*TEXT, "data.train={train}", "trainer.max_steps=[1,"], "not a valid key=value override"),
    ("max_steps not positive", [*TEXT, "data.train={train}", "trainer.max_steps=0"], "trainer.max_steps: must be > 0"),
    ("fraction out of range", [*TEXT, "data.train={train}", "data.validation_fraction=1.5"], "data.validation_fraction: must be < 1.0"),
    ("YAML syntax error in a recipe", ["recipe={bad_recipe}"], "broken.yaml"),
    ("resume and overwrite together", [*TEXT, "data.train={train}", "trainer.resume=auto", "overwrite=true"], "overwrite: cannot be combined with trainer.resume"),
    ("batch larger than data with drop_last", [*TEXT, "data.train={train}", "trainer.drop_last=true", "trainer.batch_size=64"], "trainer.drop_last=true would drop every batch"),
    ("unwritable run folder", [*TEXT, "data.train={train}", "run_dir=/proc/fmctl-run"], "run_dir: cannot write to '/proc/fmctl-run'"),
    ("resume path that is not a checkpoint", [*TEXT, "data.train={train}", "trainer.resume={empty_dir}"], "is not a complete checkpoint folder"),
    ("monitor the task does not report", [*TEXT, "data.train={train}", "trainer.monitor=val/f1"], "trainer.monitor: 'val/f1' is not reported by task text_classification"),
    ("unknown command-line option", [*TEXT, "data.train={train}", "--frobnicate"], "--frobnicate: unknown option"),
    ("Hydra config-path flag", [*TEXT, "-cp", "elsewhere"], "-cp: not supported by fmctl"),
    ("heads do not divide hidden size", [*TEXT, "data.train={train}", "backbone.hidden_size=50", "backbone.num_heads=4"], "not divisible by 4 heads"),
    ("patch does not divide image", [*IMAGES, "data.train={images_ok}", "backbone.patch_size=5"], "backbone.patch_size: 5 does not divide backbone.image_size 16"),
    ("max_length beyond positions", [*TEXT, "data.train={train}", "data.max_length=1024"], "data.max_length: 1024 exceeds backbone.max_positions"),
    ("image folder without class folders", [*IMAGES, "data.train={flat_images}"], "no class folders"),
    ("tokenizer folder without tokenizer", [*TEXT, "data.train={train}", "backbone.tokenizer={empty_dir}"], "holds no tokenizer files"),
    ("cuda asked for without a GPU", [*TEXT, "data.train={train}", "trainer.device=cuda"], "no CUDA device is visible"),
    ("JSONL line that is not an object", [*TEXT, "data.train={list_jsonl}"], "lists.jsonl:2: expected a JSON object per line"),
    ("CSV row with extra fields", [*TEXT, "data.train={ragged}"], "ragged.csv:3: 3 fields but the header has 2"),
    ("invalid data format", [*TEXT, "data.train={train}", "data.format=xml"], "data.format: expected one of"),
    ("empty label cell", [*TEXT, "data.train={empty_label}"], "empty_label.csv:3: empty label in column 'sentiment'"),
    ("a single label in training", [*TEXT, "data.train={one_label}"], "only one label ('positive')"),
    ("a used column named twice in the header", [*TEXT, "data.train={dupcols_csv}"], "dupcols.csv: column 'Review Text' appears twice in the header (columns 2 and 4)"),
    ("an object in the text field", [*TEXT, "data.train={nested_jsonl}"], "nested.jsonl:1: column 'Review Text' holds an object, not text"),
    ("a ';'-delimited .csv", [*TEXT, "data.train={reviews_semi_csv}"], "reviews_semi.csv: the header 'Review Text;Sentiment' is one column that looks ';'-delimited; re-save it with commas"),
    ("first JSONL record without the text field", [*TEXT, "data.train={sparse_jsonl}"], "sparse.jsonl:1: row has no field 'Review Text' (data.text_column)"),
    ("a text column empty in every row", [*TEXT, "data.train={no_text_csv}"], "no_text.csv: column 'Review Text' is empty in every row"),
    ("a list in a single-label column", [*TEXT, "data.train={list_label_jsonl}"], "list_label.jsonl:1: column 'sentiment' holds a list, not a label; for several labels per text use task=multilabel_classification"),
    ("hold-out took every example of a class", [*TEXT, "data.train={rare_csv}", "data.split_seed=5"], "rare.csv:21: the automatic validation hold-out (data.validation_fraction=0.1, data.split_seed=5) took every example of label 'refund_request' (1 row), leaving none to train on; give data.validation=FILE"),
    ("hold-out of a two-row file", [*TEXT, "data.train={two_rows_csv}"], "two_rows.csv: only one label ('positive') left for training: the automatic validation hold-out (data.validation_fraction=0.1, data.split_seed=0) took every example of 'negative'"),
    ("truncated token shard", ["pretrain", "recipe=bert_mlm", "data.prepared={prepared_truncated}", "trainer.max_steps=1"], "train_00000.bin: "),
    ("missing document index", ["pretrain", "recipe=bert_mlm", "data.prepared={prepared_no_idx}", "trainer.max_steps=1"], "train_00000.idx.npy: document index missing; re-run fmctl data prepare"),
    ("junk document index", ["pretrain", "recipe=bert_mlm", "data.prepared={prepared_junk_idx}", "trainer.max_steps=1"], "train_00000.idx.npy: checksum mismatch"),
    ("junk document index, checksums off", ["pretrain", "recipe=bert_mlm", "data.prepared={prepared_junk_idx}", "data.verify_shards=false", "trainer.max_steps=1"], "train_00000.idx.npy: not a readable document index"),
    ("prepared corpus without its tokenizer", ["pretrain", "recipe=bert_mlm", "data.prepared={prepared_no_tokenizer}", "trainer.max_steps=1"], "prepared_no_tokenizer/tokenizer: tokenizer folder missing; re-run fmctl data prepare"),
    ("corpus vocabulary beyond the model's embedding", ["pretrain", "recipe=bert_mlm", "data.prepared={prepared}", "backbone.pretrained={small_vocab_bert}", "data.max_length=32"], "but the model's embedding holds 40"),
    ("not a prepared corpus", ["pretrain", "recipe=bert_mlm", "data.prepared={empty_dir}"], "is not a prepared corpus (no prepared.json)"),
    ("pretraining task on the finetune verb", ["recipe=bert_mlm", "data.prepared={prepared}"], "is a pretraining objective; run it with fmctl pretrain"),
    ("malformed CoNLL line", [*NER, "data.train={bad_conll}"], "bad.conll:5: expected a word and its tag separated by whitespace, got 'paris'"),
    ("CoNLL lines with different columns", [*NER, "data.train={columns_conll}"], "columns.conll:3: 2 columns but earlier lines have 3"),
    ("tagged JSONL with more tags than words", [*NER, "data.train={tags_jsonl}"], "tags.jsonl:2: 1 words but 2 tags"),
    ("tag unseen in training", [*NER, "data.train={conll}", "data.test={unseen_tag_conll}"], "unseen_tag.conll:3: label 'B-MISC' never appears in the training data"),
    ("SQuAD file without articles", [*QA, "data.train={not_squad_json}"], "not_squad.json: not SQuAD JSON"),
    ("SQuAD question longer than the window", [*QA, "data.train={long_question_json}", "data.validation={long_question_json}"], "question 'q1' is 41 tokens, which leaves no room for context"),
    ("doc_stride too large for max_length", [*QA, "data.train={squad}", "task.doc_stride=30"], "task.doc_stride: 30 must be less than half of data.max_length (48)"),
    ("SQuAD v2 data with no-answer turned off", [*QA, "data.train={squad_v2}", "task.allow_no_answer=false"], "set task.allow_no_answer=true"),
    ("translation pair with an empty side", [*TRANSLATION, "data.train={empty_side_tsv}"], "empty_side.tsv:3: empty target text (column 'target')"),
    ("headerless pair without a tab", [*TRANSLATION, "data.train={no_tab_txt}", "data.format=pairs"], "no_tab.txt:2: expected source<TAB>target"),
    ("translation on an encoder", [*TRANSLATION, "data.train={pairs}", "backbone=bert"], "task 'translation' needs backbone gpt or t5"),
    ("BERT folder for T5 translation", [*TRANSLATION, "data.train={pairs}", "backbone.pretrained={cz_base}"], "cz_base' is an encoder (bert); use backbone=bert"),
    ("BERT folder for GPT translation", ["recipe=translation_gpt", *TINY_TEXT, "trainer.max_steps=2", "data.train={pairs}", "backbone.pretrained={cz_base}"], "cz_base' is an encoder (bert); use backbone=bert"),
    ("GPT source and target beyond positions", [*TRANSLATION, "data.train={pairs}", "backbone=gpt", "backbone.max_positions=64", "data.max_length=48", "task.generation.max_new_tokens=8"], "data.max_target_length: a GPT reads source and target as one sequence"),
    ("GPT generation beyond positions", [*TRANSLATION, "data.train={pairs}", "backbone=gpt", "backbone.max_positions=64", "data.max_length=32", "data.max_target_length=16", "task.generation.max_new_tokens=40"], "task.generation.max_new_tokens: a GPT generates after the source and separator, and data.max_length + 1 + task.generation.max_new_tokens = 73 exceeds backbone.max_positions (64)"),
    ("numeric label column holding text", [*REGRESSION, "data.train={text_score_csv}"], "text_score.csv:3: label 'high' in column 'score' is not a number"),
    ("built-in data for another task", [*REGRESSION, "data=topics"], "data.builtin: 'topics' does not fit task 'regression'"),
    ("label list with an unknown label", [*MULTILABEL, "data.train={topics}", "data.test={unknown_topic_csv}"], "unknown_topic.csv:3: label 'weather' never appears in the training data"),
    ("customize freeze glob that matches nothing", [*CUSTOMIZE, "customize=[freeze]", "customize.freeze.params=[encoder.nothing.*]"], "customize.freeze.params: 'encoder.nothing.*' matches no parameter; names look like bert.embeddings"),
    ("customize drop_layers beyond the model", [*CUSTOMIZE, "customize=[drop_layers]", "customize.drop_layers.bottom=5"], "customize.drop_layers.bottom: asks for 5 layers but the model has only 1"),
    ("customize LoRA target that matches no module", [*CUSTOMIZE, "customize=[lora]", "customize.lora.target_modules=[qeury]"], "customize.lora.target_modules: 'qeury' matches no module; linear modules here are named classifier, dense, key, query, value"),
    ("customize distillation from a teacher with other labels", [*CUSTOMIZE, "customize=[distill]", "customize.distill.teacher={cz_teacher}"], "customize.distill.teacher: its labels [a, b, c] differ from the student's [negative, positive]"),
    ("customize setting for an op not in the list", [*CUSTOMIZE, "customize=[lora]", "customize.freeze.bottom=1"], "customize.freeze.bottom: op 'freeze' is not in customize=[lora]; add it to the list or drop the setting"),
    ("customize distillation from a teacher with another tokenizer", [*CUSTOMIZE, "customize=[distill]", "customize.distill.teacher={cz_other_tokenizer}"], "cz_other_tokenizer' uses another tokenizer ("),
    ("customize sparsity outside [0, 1)", [*CUSTOMIZE, "customize=[prune]", "customize.prune.sparsity=1.0"], "customize.prune.sparsity: must be < 1.0, got 1.0"),
    ("customize without a base", ["customize", *TEXT, "data.train={train}", "customize=[head]"], "base: required"),
    ("customize with an unknown operation", [*CUSTOMIZE, "customize=[lorra]"], "customize: unknown option 'lorra' (did you mean 'lora'?)"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture()
def existing_run(tmp_path):
    """A run folder that bad input pointed at it (even with overwrite=true) must leave alone."""
    run = tmp_path / "existing_run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("recipe: earlier\n", encoding="utf-8")
    (run / "model" / "weights.txt").write_text("precious", encoding="utf-8")
    return run


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def call_main(args: list[str]) -> tuple[int, str, str]:
    from fmctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_actionable_line(case, args, expected, files, existing_run):
    before = snapshot(existing_run)
    args = [a.format(**files) for a in args]
    if not any(a.startswith(("run_dir=", "overwrite=", "trainer.resume=")) for a in args):
        args += [f"run_dir={existing_run}", "overwrite=true"]  # even when allowed to replace it, it stays
    elif not any(a.startswith("run_dir=") for a in args):
        args += [f"run_dir={existing_run}"]
    verb = args.pop(0) if args[0] in ("pretrain", "finetune", "customize") else "finetune"
    code, out, err = call_main([verb, *args])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, out + err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert snapshot(existing_run) == before


def test_existing_run_folder_is_not_clobbered(files, existing_run):
    before = snapshot(existing_run)
    code, _, err = call_main(["finetune", *TEXT, f"data.train={files['train']}", f"run_dir={existing_run}"])
    assert code != 0 and "already holds files" in err and "overwrite=true" in err
    assert snapshot(existing_run) == before


def test_eval_of_a_folder_without_model(tmp_path):
    code, _, err = call_main(["eval", str(tmp_path)])
    assert code != 0 and "not an fmctl run folder" in err


def test_real_process_prints_no_traceback_and_debug_shows_one(files, tmp_path):
    args = ["finetune", *TEXT, f"data.train={files['header_only']}"]
    plain = run_cli(args, cwd=tmp_path)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [f"error: {files['header_only']}: no examples (the file is empty or holds only a header)"]
    debug = run_cli([*args, "--debug"], cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert not (tmp_path / "runs").exists()


EVALUATION_CASES = [
    ("probe without labelled data", ["probe", "{timm_vit}"],
     "no labelled image data to probe on; give data=digits or data.train=FILE"),
    ("probe of a folder without weights", ["probe", "{no_weights}", "data=topics"], "has no weights"),
    ("probe unknown key", ["probe", "{timm_vit}", "data=digits", "knn=5"], "knn: unknown key"),
    ("probe unknown data option", ["probe", "{timm_vit}", "data=digitz"], "data: unknown option 'digitz' (did you mean 'digits'?)"),
    ("curve start not a model folder", ["report", "learning-curve", *TEXT, "data.train={train}",
                                        "starts=[scratch,{empty_dir}]"], "starts[1]: '{empty_dir}' has no config.json"),
    ("curve budget not a number", ["report", "learning-curve", *TEXT, "data.train={train}", "budgets=[ten]"],
     "budgets[0]: expected a number of labels or 'all', got 'ten'"),
    ("curve per-start group", ["report", "learning-curve", *TEXT, "data.train={train}", "scratch.backbone=gpt"],
     "scratch.backbone=gpt: not a key=value setting for the scratch start"),
    ("compare one run", ["compare", "{empty_dir}"], "compare: give two or more run folders"),
    ("compare a folder that is no run", ["compare", "{empty_dir}", "{images}"], "not an fmctl run folder"),
]


@pytest.mark.parametrize("case, args, expected", EVALUATION_CASES, ids=[c[0] for c in EVALUATION_CASES])
def test_evaluation_verbs_bad_input_gives_one_line(case, args, expected, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call_main([a.format(**files) for a in args])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, out + err
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected.format(**files) in lines[0], err
    assert "Traceback" not in err + out and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def task_runs(files, tmp_path_factory):
    """Two-step runs of the tasks whose export/predict failure modes the catalogue below
    covers, an ONNX export of the QA run, and the broken inputs for them."""
    from fmctl import pipeline
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from tests.helpers import compose, finetune

    root = tmp_path_factory.mktemp("task_runs")
    runs = {"qa_run": finetune("qa_squad", [*QA[1:], f"data.train={files['squad']}"], root / "qa").run_dir,
            "regression_run": finetune("regression_csv", [*REGRESSION[1:], f"data.train={files['scores']}"],
                                       root / "regression").run_dir,
            "t5_run": finetune("translation_t5", [*TRANSLATION[1:], f"data.train={files['pairs']}"],
                               root / "t5").run_dir}
    raw, run = compose("bert_mlm", [f"data.prepared={files['prepared']}", "trainer.max_steps=1", "trainer.progress=off",
                                    "data.max_length=32"], root / "mlm")
    runs["mlm_run"] = pipeline.pretrain(run, raw, console=Console(quiet=True)).run_dir
    runs["qa_onnx"] = export_run(runs["qa_run"], ExportOptions(fmt="onnx", exporter="torchscript"),
                                 log=lambda _line: None).folder
    (root / "no_context.csv").write_text("question,passage\nwhat is the code ?,a code zorb\n", encoding="utf-8")
    (root / "questions.csv").write_text("question,context\nwhat is the code ?,a code zorb\n", encoding="utf-8")
    (root / "questions.txt").write_text("what is the code ?\n", encoding="utf-8")
    runs.update({name.replace(".", "_"): root / name for name in ("no_context.csv", "questions.csv", "questions.txt")})
    runs["images_ok"] = files["images_ok"]
    return runs


# (case, argv with {name} from task_runs, text the one error line must contain)
TASK_EXPORT_PREDICT_CASES = [
    ("QA input without a context column", ["predict", "{qa_onnx}", "--input", "{no_context_csv}"],
     "no column 'context' for --context-column"),
    ("QA question column that is not there", ["predict", "{qa_run}", "--input", "{questions_csv}",
                                              "--question-column", "query"], "no column 'query' for --question-column"),
    ("QA given one text", ["predict", "{qa_run}", "--text", "what is the code ?"],
     "is an extractive_qa model; give --question Q --context C, or --input FILE (CSV, TSV, JSONL or Parquet) "
     "with 'question' and 'context' columns"),
    ("QA given a text-pair column", ["predict", "{qa_onnx}", "--input", "{questions_csv}", "--text-pair-column",
                                     "context"], "is a model for extractive_qa; it reads no text pairs"),
    ("QA question without context", ["predict", "{qa_run}", "--question", "what is the code ?"],
     "predict: --question needs --context too"),
    ("QA given a text-per-line file", ["predict", "{qa_onnx}", "--input", "{questions_txt}"],
     "a .txt file holds one text a line; this model needs the columns question, context"),
    ("TorchScript export of a translation run", ["export", "{t5_run}", "--format", "torchscript"],
     "format 'torchscript' is not supported for task 'translation'; translation exports to: onnx, safetensors, hf"),
    ("int8-static translation export", ["export", "{t5_run}", "--quantize", "int8-static"],
     "--quantize int8-static is not offered for translation"),
    ("int8 for a CPU class fmctl does not know", ["export", "{qa_run}", "--quantize", "int8", "--int8-target", "sse"],
     "--int8-target: unknown 'sse'; choose one of auto, vnni, avx2, arm"),
    ("int8 regression export", ["export", "{regression_run}", "--quantize", "int8"],
     "--quantize is not supported for task 'regression'"),
    ("predict with a masked-LM run", ["predict", "{mlm_run}", "--text", "hello"],
     "predict does not serve task 'mlm' (a masked-LM run is a starting point"),
    ("translation input without the source column", ["predict", "{t5_run}", "--input", "{questions_csv}"],
     "no column 'source' for --text-column"),
    ("images given to a translation model", ["predict", "{t5_run}", "--images", "{images_ok}"],
     "is a translation model; give --input FILE or --text"),
]


@pytest.mark.parametrize("case, argv, expected", TASK_EXPORT_PREDICT_CASES, ids=[c[0] for c in TASK_EXPORT_PREDICT_CASES])
def test_bad_task_export_and_predict_input_gives_one_line(case, argv, expected, task_runs):
    code, out, err = call_main([a.format(**task_runs) for a in argv])
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2, out + err
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err + out
