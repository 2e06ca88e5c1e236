"""Token classification (NER, POS tagging): one tag per word, BERT or GPT backbone.

Words are split into sub-word pieces; the first piece of each word carries the word's
tag and the others are left out of the loss (fmctl.data.alignment). Predictions are read
back per word, so metrics and predictions files are about the user's words, never about
pieces. Entity-level precision/recall/F1 come from seqeval (CoNLL's definition), token
accuracy too; model/ is AutoModelForTokenClassification with the tags as id2label.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig
from fmctl.data.alignment import first_pieces, token_labels, word_predictions
from fmctl.data.collate import IGNORE_INDEX, PadCollator
from fmctl.data.conll import TokenRow, read_token_rows
from fmctl.data.labels import label_names_from
from fmctl.data.sources import split_paths
from fmctl.data.text import EncodedDataset
from fmctl.models.saved import saved_label_names
from fmctl.models.text import label_metadata
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import check_labels, read_splits
from fmctl.tasks.declare import Serving, TaskDeclaration
from fmctl.tasks.text_inputs import fingerprints, mean_loss, tokenizer_for


@dataclass
class TokenClassificationTaskConfig:
    name: Literal["token_classification"] = "token_classification"
    # Entity-level scores need IOB/IOBES-style tags (B-PER, I-PER, O); auto turns them on
    # when every tag looks like that, so POS tagging reports token accuracy alone.
    entity_metrics: Literal["auto", "on", "off"] = "auto"


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ENTITY_TAG = re.compile(r"^(O|[BIESLU][-_].+)$")


class TokenClassification(Task):
    def __init__(self, cfg: TokenClassificationTaskConfig):
        self.cfg = cfg
        self.label_names: list[str] = []
        self.entities = True
        self.sentences: list[TokenRow] = []   # every split's rows; batches carry indices into it

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        rows = read_splits(run.data, paths, lambda p: read_token_rows(p, run.data), splits)
        if model_dir:
            names = saved_label_names(model_dir)
        else:
            names = label_names_from(tag for r in rows["train"] for tag in r.tags)
        check_labels(rows, names, paths, None if model_dir else run.data,
                     lambda r: [(tag, r.where(i)) for i, tag in enumerate(r.tags)])
        self.label_names = names
        self.entities = self._entity_tags(names)
        tokenizer = tokenizer_for(run, model_dir, lambda: (" ".join(r.tokens) for r in rows["train"]),
                                  split_words=True)
        datasets, cut = {}, 0
        for split, split_rows in rows.items():
            dataset, missing = self._encode(split_rows, tokenizer, run.data.max_length)
            datasets[split] = dataset
            cut += missing
        warnings = []
        if cut:
            warnings.append(f"{cut} words got no token (beyond data.max_length={run.data.max_length}, or characters "
                            f"the tokenizer drops); they count as predicted '{self.fill_label}'")
        pad = {"input_ids": tokenizer.pad_token_id, "token_type_ids": 0, "labels": IGNORE_INDEX, "word_index": -1}
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=PadCollator(pad), label_names=names, preprocessors={"text": tokenizer}, sources=fingerprints(paths),
            rows=rows, warnings=warnings)

    @property
    def main_metric(self) -> str:
        """Entity F1 for entity tags; for other tag sets (POS, code token kinds) the macro-F1
        over tags, which frequent tags cannot dominate as they do word accuracy. Known
        after prepare."""
        return "f1" if self.entities else "macro_f1"

    def _entity_tags(self, names: list[str]) -> bool:
        if self.cfg.entity_metrics != "auto":
            return self.cfg.entity_metrics == "on"
        return all(_ENTITY_TAG.match(n) for n in names) and any(n != "O" for n in names)

    @property
    def fill_label(self) -> str:
        return fill_label(self.label_names)

    def _encode(self, rows: list[TokenRow], tokenizer: Any, max_length: int) -> tuple[EncodedDataset, int]:
        index = {n: i for i, n in enumerate(self.label_names)}
        encoded = tokenizer([r.tokens for r in rows], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        features, missing = [], 0
        for i, row in enumerate(rows):
            words = first_pieces(encoded.word_ids(i))
            tags = [index[t] for t in row.tags]
            feature = {"input_ids": encoded["input_ids"][i], "labels": token_labels(words, tags), "word_index": words,
                       "sentence": len(self.sentences)}
            if "token_type_ids" in encoded:
                feature["token_type_ids"] = encoded["token_type_ids"][i]
            features.append(feature)
            self.sentences.append(row)
            missing += len(row.tokens) - sum(w >= 0 for w in words)
        return EncodedDataset(features, None), missing

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        self.backbone = backbones.family(run.backbone.name)
        return self.backbone.build(run.backbone, "token_classification", data.preprocessor,
                                   **label_metadata(data.label_names))

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch}).logits

    def loss(self, logits: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)

    def new_metrics(self) -> "TaggingMetrics":
        return TaggingMetrics(self.label_names, self.sentences, self.entities, self.label_names.index(self.fill_label))

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder, data.preprocessor)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "token_classification")
        return model

    def example_fields(self, row: TokenRow) -> dict[str, Any]:
        return {"tokens": row.tokens}

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", len(label_names)]}]

    def parity_measure(self) -> Any:
        """A tag per real token agrees or not."""
        from fmctl.export.measures import TokenArgmax

        return TokenArgmax()

    def export_preprocessing(self, run: RunConfig, data: PreparedData, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {**preprocessing, "words": "split on whitespace (or given as a list of words)",
                "is_split_into_words": True, "truncation": "longest_first", "tokens_column": run.data.tokens_column,
                "text_pair_column": None}

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        return {"kind": "word_tags", "output": "logits", "labels": "label_names",
                "word_tag": "argmax of the word's first piece", "fill_label": fill_label(label_names)}


class TaggingMetrics:
    """Per-word predictions of one evaluation pass, scored per sentence with seqeval."""

    def __init__(self, label_names: list[str], sentences: list[TokenRow], entities: bool, fill: int):
        self.label_names = label_names
        self.sentences = sentences
        self.entities = entities
        self.fill = fill
        self.predicted: dict[int, list[str]] = {}
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: Any, batch: dict[str, Any], loss: Any) -> None:
        token_predictions = logits.argmax(-1).cpu().tolist()
        word_index = batch["word_index"].cpu().tolist()
        for k, sentence in enumerate(batch["sentence"].cpu().tolist()):
            row = self.sentences[sentence]
            ids, _ = word_predictions(word_index[k], token_predictions[k], len(row.tokens), self.fill)
            self.predicted[sentence] = [self.label_names[i] for i in ids]
        if loss is not None:
            n = batch["labels"].shape[0]
            self.loss_sum += float(loss) * n
            self.count += n

    def pairs(self) -> tuple[list[list[str]], list[list[str]]]:
        order = sorted(self.predicted)
        return [self.sentences[i].tags for i in order], [self.predicted[i] for i in order]

    def compute(self) -> dict[str, float]:
        if not self.predicted:
            return {}
        gold, predicted = self.pairs()
        return tagging_scores(gold, predicted, self.entities) | mean_loss(self.loss_sum, self.count)

    def report(self) -> dict[str, Any]:
        gold, predicted = self.pairs()
        out: dict[str, Any] = {**self.compute(), "num_examples": len(gold), "num_words": sum(map(len, gold))}
        if self.entities:
            from seqeval.metrics import classification_report

            table = classification_report(gold, predicted, output_dict=True, zero_division=0)
            out["per_entity"] = {name: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                                        "f1": float(v["f1-score"]), "support": int(v["support"])}
                                 for name, v in table.items() if not name.endswith(" avg")}
        else:
            out.update(per_tag_report(gold, predicted, self.label_names))
        return out

    def records(self, rows: list[TokenRow],
                example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        order = sorted(self.predicted)
        if len(order) != len(rows):
            raise RuntimeError(f"{len(order)} predicted sentences for {len(rows)} rows")
        for row, i in zip(rows, order):
            yield {**example_fields(row), "tags": row.tags, "predictions": self.predicted[i]}

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        """confusion_matrix.png over the tags (plain tag sets; entities are scored as spans)."""
        if not self.entities:
            from fmctl.evaluate.plots import confusion_matrix_png

            confusion_matrix_png(report["confusion_matrix"], self.label_names, folder / "confusion_matrix.png")

    def tables(self, report: dict[str, Any]) -> list[Any]:
        from fmctl.report import per_class_table

        if self.entities:
            return [per_class_table(report["per_entity"], title="per entity type", key="entity")]
        return [per_class_table(report["per_tag"], title="per tag", key="tag")]


def tagging_scores(gold: list[list[str]], predicted: list[list[str]], entities: bool) -> dict[str, float]:
    """seqeval's word accuracy, and with entity tags its entity-level micro precision,
    recall and F1 (an entity counts only when its type and both boundaries are right);
    with other tags the macro-F1 over the tags of the words (scikit-learn, over the tags in
    the gold words or the predictions: a tag absent from both says nothing here)."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    out = {"accuracy": float(accuracy_score(gold, predicted))}
    if entities:
        out["precision"] = float(precision_score(gold, predicted, zero_division=0))
        out["recall"] = float(recall_score(gold, predicted, zero_division=0))
        out["f1"] = float(f1_score(gold, predicted, zero_division=0))
    else:
        from sklearn.metrics import f1_score as sk_f1

        words_gold, words_predicted = _flat(gold), _flat(predicted)
        out["macro_f1"] = float(sk_f1(words_gold, words_predicted, average="macro", zero_division=0))
    return out


def per_tag_report(gold: list[list[str]], predicted: list[list[str]], tags: list[str]) -> dict[str, Any]:
    """Per-tag precision, recall, F1 and support over words, and the tag confusion matrix
    (rows gold, columns predicted, in the model's tag order), as text classification
    reports per class."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    words_gold, words_predicted = _flat(gold), _flat(predicted)
    precision, recall, f1, support = precision_recall_fscore_support(words_gold, words_predicted, labels=tags,
                                                                     zero_division=0)
    per_tag = {tag: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i, tag in enumerate(tags)}
    return {"per_tag": per_tag,
            "confusion_matrix": confusion_matrix(words_gold, words_predicted, labels=tags).tolist()}


def _flat(sentences: list[list[str]]) -> list[str]:
    return [tag for sentence in sentences for tag in sentence]


def fill_label(label_names: list[str]) -> str:
    """What a word without tokens is predicted to be: outside any entity."""
    return "O" if "O" in label_names else label_names[0]


TASKS = (TaskDeclaration(
    name="token_classification", config=TokenClassificationTaskConfig, implementation=TokenClassification,
    backbones=("bert", "gpt"), metrics=("f1", "precision", "recall", "accuracy", "macro_f1", "loss"), main_metric="f1",
    main_mode="max", customize=True, serving=Serving(reads="words", auto_class="AutoModelForTokenClassification")),)
