"""Extractive question answering (SQuAD v1.1 and v2.0) with a BERT backbone.

A question and its context become one or more windows of data.max_length tokens: long
contexts are cut with an overlap of task.doc_stride tokens. The model scores every token
as the answer's start and end; training targets come from the answer's character span
through the tokenizer's offset mapping (the [CLS] token when the answer is not inside a
window, or the question has none). Answers are read back by searching the n_best starts
and ends of every window of a question for the best valid span (context tokens, end
after start, at most max_answer_length tokens) and mapping it to characters of the
context. For v2.0 the answer is "" when the no-answer score ([CLS] start + end) beats the
best span by more than task.null_score_threshold.

Exact match and F1 are SQuAD's definitions as implemented by torchmetrics (the official
evaluation script's normalisation: lower case, no punctuation or articles); model/ is
transformers' AutoModelForQuestionAnswering.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig, bounded
from fmctl.data.alignment import char_span_to_tokens, tokens_to_char_span
from fmctl.data.collate import PadCollator
from fmctl.data.sources import split_paths
from fmctl.data.squad import QARow, read_squad
from fmctl.data.text import EncodedDataset
from fmctl.errors import DataError
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import read_splits
from fmctl.tasks.declare import Serving, TaskDeclaration
from fmctl.tasks.text_inputs import fingerprints, mean_loss, tokenizer_for


@dataclass
class ExtractiveQATaskConfig:
    name: Literal["extractive_qa"] = "extractive_qa"
    # Contexts longer than data.max_length are cut into windows that overlap by this many tokens.
    doc_stride: int = bounded(64, ge=0)
    # Answers longer than this many tokens are never predicted.
    max_answer_length: int = bounded(30, ge=1)
    # Start and end candidates kept per window when searching for the best span.
    n_best: int = bounded(20, ge=1)
    # SQuAD v2: predict "no answer" when its score beats the best span's by more than this.
    null_score_threshold: float = 0.0
    # null: allow "no answer" exactly when the data is SQuAD v2.0 (is_impossible questions).
    allow_no_answer: bool | None = None


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Window:
    question: int                               # index into the task's questions
    offsets: list[tuple[int, int] | None]       # context character span per token, None outside the context
    null_index: int                             # the token that stands for "no answer" ([CLS])


@dataclass
class Answer:
    text: str
    score: float                                # start + end logit of the chosen span
    null_score_diff: float | None               # no-answer score minus the best span's (v2)
    start: int | None = None                    # the answer's character span in the context
    end: int | None = None


class ExtractiveQA(Task):
    def __init__(self, cfg: ExtractiveQATaskConfig):
        self.cfg = cfg
        self.questions: list[QARow] = []   # every split's questions; windows point into it
        self.windows: list[Window] = []
        self.allow_no_answer = False

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        if run.data.format not in ("auto", "squad"):
            raise DataError(f"data.format: extractive_qa reads SQuAD JSON; got data.format={run.data.format}")
        files: dict[Path, Any] = {}

        def read(path: Path) -> list[QARow]:
            files[path] = read_squad(path)
            return files[path].rows

        rows = read_splits(run.data, paths, read, splits)
        warnings = [w for f in files.values() for w in f.warnings]
        if "train" in rows:  # evaluation keeps them: they are scored on their answer texts
            untrainable = [f"'{r.id}'" for r in rows["train"] if not r.trainable]
            if untrainable:
                rows["train"] = [r for r in rows["train"] if r.trainable]
                shown = ", ".join(untrainable[:3]) + (", ..." if len(untrainable) > 3 else "")
                warnings.append(f"{paths['train']}: skipped {len(untrainable)} training question{'s' if len(untrainable) > 1 else ''} "
                                f"left without a usable answer span ({shown})")
                if not rows["train"]:
                    raise DataError(f"{paths['train']}: no training question has an answer at its answer_start")
        version_2 = any(f.version_2 for f in files.values())
        self.allow_no_answer = version_2 if self.cfg.allow_no_answer is None else self.cfg.allow_no_answer
        if version_2 and not self.allow_no_answer:
            raise DataError("task.allow_no_answer: the data has SQuAD v2.0 questions without an answer; "
                            "set task.allow_no_answer=true (or null)")

        def training_texts():
            seen = set()
            for r in rows["train"]:
                yield r.question
                if r.context not in seen:
                    seen.add(r.context)
                    yield r.context

        tokenizer = tokenizer_for(run, model_dir, training_texts)
        datasets = {split: self._encode(split_rows, tokenizer, run.data.max_length)
                    for split, split_rows in rows.items()}
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=PadCollator({"input_ids": tokenizer.pad_token_id, "token_type_ids": 0}), label_names=[],
            preprocessors={"text": tokenizer}, sources=fingerprints(paths), rows=rows, warnings=warnings)

    def _encode(self, rows: list[QARow], tokenizer: Any, max_length: int) -> EncodedDataset:
        stride = self.cfg.doc_stride
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - stride
        questions = tokenizer([r.question for r in rows], add_special_tokens=False)["input_ids"]
        for row, length in zip(rows, map(len, questions)):
            if length >= room:
                raise DataError(f"{row.source}: {row.where}: question '{row.id}' is {length} tokens, which leaves no "
                                f"room for context in data.max_length={max_length} with task.doc_stride={stride}; "
                                f"raise data.max_length or lower task.doc_stride")
        encoded = tokenizer([r.question for r in rows], [r.context for r in rows], truncation="only_second",
                            max_length=max_length, stride=stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
        first = len(self.questions)
        self.questions += rows
        features = []
        for f, ids in enumerate(encoded["input_ids"]):
            row_index = encoded["overflow_to_sample_mapping"][f]
            sequence = encoded.sequence_ids(f)
            offsets = [tuple(span) if sequence[k] == 1 else None for k, span in enumerate(encoded["offset_mapping"][f])]
            null = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            row = rows[row_index]
            span = None
            if row.answers:
                text, start = row.answers[0]
                span = char_span_to_tokens(offsets, start, start + len(text))
            feature = {"input_ids": ids, "labels": list(span) if span else [null, null], "window": len(self.windows)}
            if "token_type_ids" in encoded:
                feature["token_type_ids"] = encoded["token_type_ids"][f]
            features.append(feature)
            self.windows.append(Window(first + row_index, offsets, null))
        return EncodedDataset(features, None)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        self.backbone = backbones.family(run.backbone.name)
        return self.backbone.build(run.backbone, "question_answering", data.preprocessor)

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        out = model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch})
        return out.start_logits, out.end_logits

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        start, end = outputs
        labels = batch["labels"]
        return (F.cross_entropy(start.float(), labels[:, 0]) + F.cross_entropy(end.float(), labels[:, 1])) / 2

    def new_metrics(self) -> "SquadMetrics":
        return SquadMetrics(self)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder, data.preprocessor)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "question_answering")
        return model

    def example_fields(self, row: QARow) -> dict[str, Any]:
        return {"id": row.id, "question": row.question}

    def served_label_names(self, model_dir: Path, data: PreparedData) -> list[str]:
        return []

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": name, "dtype": "float32", "shape": ["batch", "sequence"]}
                for name in self.declaration.serving.outputs]

    def parity_measure(self) -> Any:
        """The answer span (best start and end over a window) agrees or not."""
        from fmctl.export.measures import SpanMatch

        return SpanMatch(self.cfg.max_answer_length)

    def export_preprocessing(self, run: RunConfig, data: PreparedData, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {**preprocessing, "truncation": "only_second", "stride": int(self.cfg.doc_stride),
                "return_overflowing_tokens": True, "return_offsets_mapping": True,
                "cls_token_id": data.preprocessors["text"].cls_token_id, "text_column": None,
                "text_pair_column": None, "question_column": "question", "context_column": "context",
                "windows": "question + context; contexts longer than max_length are cut into windows that overlap "
                           "by `stride` tokens"}

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        cfg = self.cfg
        return {"kind": "answer_span", "outputs": list(self.declaration.serving.outputs),
                "max_answer_length": cfg.max_answer_length, "n_best": cfg.n_best, "doc_stride": cfg.doc_stride,
                "allow_no_answer": allows_no_answer(run), "null_score_threshold": cfg.null_score_threshold,
                "span": "best start + end logit over every window of the question: context tokens only, end >= "
                        "start, at most max_answer_length tokens; characters from the offset mapping"}


def best_answer(windows: list[tuple[Window, Any, Any]], context: str, n_best: int, max_answer_length: int,
                allow_no_answer: bool, null_threshold: float) -> Answer:
    """The answer to one question from the start/end logits of all its windows."""
    import numpy as np

    best: tuple[float, int, int] | None = None
    null_score = None
    for window, start_logits, end_logits in windows:
        null = float(start_logits[window.null_index] + end_logits[window.null_index])
        null_score = null if null_score is None else min(null_score, null)
        starts = np.argsort(start_logits)[::-1][:n_best]
        ends = np.argsort(end_logits)[::-1][:n_best]
        for s in starts:
            if window.offsets[s] is None:
                continue
            for e in ends:
                if window.offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if best is None or score > best[0]:
                    start_char, end_char = tokens_to_char_span(window.offsets, s, e)
                    best = (score, start_char, end_char)
    if best is None:
        return Answer("", null_score or 0.0, None)
    text = context[best[1]:best[2]]
    if not allow_no_answer:
        return Answer(text, best[0], None, best[1], best[2])
    diff = null_score - best[0]
    if diff > null_threshold:
        return Answer("", best[0], diff)
    return Answer(text, best[0], diff, best[1], best[2])


class SquadMetrics:
    """Logits of every window seen in one evaluation pass, turned into answers per question."""

    def __init__(self, task: ExtractiveQA):
        self.task = task
        self.logits: dict[int, tuple[Any, Any]] = {}
        self.loss_sum = 0.0
        self.count = 0
        self._answers: dict[int, Answer] | None = None

    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None:
        start, end = (t.float().cpu().numpy() for t in outputs)
        for k, w in enumerate(batch["window"].cpu().tolist()):
            n = len(self.task.windows[w].offsets)
            self.logits[w] = (start[k, :n], end[k, :n])
        if loss is not None:
            n = batch["labels"].shape[0]
            self.loss_sum += float(loss) * n
            self.count += n
        self._answers = None

    def answers(self) -> dict[int, Answer]:
        """Question index -> its answer, in question order."""
        if self._answers is None:
            cfg = self.task.cfg
            grouped: dict[int, list[tuple[Window, Any, Any]]] = {}
            for w, (start, end) in sorted(self.logits.items()):
                window = self.task.windows[w]
                grouped.setdefault(window.question, []).append((window, start, end))
            self._answers = {q: best_answer(windows, self.task.questions[q].context, cfg.n_best,
                                            cfg.max_answer_length, self.task.allow_no_answer,
                                            cfg.null_score_threshold)
                             for q, windows in sorted(grouped.items())}
        return self._answers

    def compute(self) -> dict[str, float]:
        answers = self.answers()
        if not answers:
            return {}
        rows = [self.task.questions[q] for q in answers]
        predictions = [a.text for a in answers.values()]
        return squad_scores(rows, predictions) | mean_loss(self.loss_sum, self.count)

    def report(self) -> dict[str, Any]:
        return {**self.compute(), "num_examples": len(self.answers()), "num_windows": len(self.logits),
                "squad_version": "2.0" if self.task.allow_no_answer else "1.1"}

    def records(self, rows: list[QARow], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        answers = self.answers()
        if len(answers) != len(rows):
            raise RuntimeError(f"{len(answers)} answered questions for {len(rows)} rows")
        for row, answer in zip(rows, answers.values()):
            record = {**example_fields(row), "answers": list(row.references), "prediction": answer.text,
                      "score": round(answer.score, 4)}
            if answer.null_score_diff is not None:
                record["null_score_diff"] = round(answer.null_score_diff, 4)
            yield record

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        """predictions.json ({id: answer}) and, for v2, null_odds.json ({id: no-answer
        score minus best span score}): the inputs of SQuAD's official evaluation script."""
        answers = self.answers()
        ids = [self.task.questions[q].id for q in answers]
        (folder / "predictions.json").write_text(
            json.dumps(dict(zip(ids, (a.text for a in answers.values()))), ensure_ascii=False, indent=1),
            encoding="utf-8")
        if self.task.allow_no_answer:
            odds = {i: a.null_score_diff if a.null_score_diff is not None else 0.0
                    for i, a in zip(ids, answers.values())}
            (folder / "null_odds.json").write_text(json.dumps(odds, indent=1), encoding="utf-8")

    def tables(self, report: dict[str, Any]) -> list[Any]:
        return []


def squad_scores(rows: list[QARow], predictions: list[str]) -> dict[str, float]:
    """SQuAD exact match and F1 (percentages) from torchmetrics; a question without an
    answer has the gold answer "" (v2.0: only an empty prediction scores). With both kinds
    of questions, the official v2.0 breakdown by has-answer / no-answer too."""
    from torchmetrics.functional.text import squad

    def score(indices: list[int]) -> tuple[float, float]:
        preds = [{"id": str(i), "prediction_text": predictions[i]} for i in indices]
        # answer_start is not used by the metric (texts only, as the official script)
        target = [{"id": str(i), "answers": {"text": rows[i].references or [""],
                                             "answer_start": [-1] * max(1, len(rows[i].references))}}
                  for i in indices]
        result = squad(preds, target)
        return float(result["exact_match"]), float(result["f1"])

    everything = list(range(len(rows)))
    out = dict(zip(("exact_match", "f1"), score(everything)))
    has_answer = [i for i in everything if rows[i].references]
    no_answer = [i for i in everything if not rows[i].references]
    if has_answer and no_answer:
        out |= dict(zip(("has_answer_exact_match", "has_answer_f1"), score(has_answer)))
        out |= dict(zip(("no_answer_exact_match", "no_answer_f1"), score(no_answer)))
    return out


def allows_no_answer(run: RunConfig) -> bool:
    """Whether "no answer" may be predicted: task.allow_no_answer, or (null) whether any of
    the run's SQuAD files is v2.0, whose questions may have none."""
    if run.task.allow_no_answer is not None:
        return bool(run.task.allow_no_answer)
    return any(read_squad(p).version_2 for p in split_paths(run.data).values() if p is not None and Path(p).is_file())


def _check_stride(run: RunConfig) -> list[str]:
    if run.task.doc_stride >= run.data.max_length // 2:
        return [f"task.doc_stride: {run.task.doc_stride} must be less than half of data.max_length "
                f"({run.data.max_length}) so that every window adds new context"]
    return []


TASKS = (TaskDeclaration(
    name="extractive_qa", config=ExtractiveQATaskConfig, implementation=ExtractiveQA, backbones=("bert",),
    metrics=("exact_match", "f1", "has_answer_exact_match", "has_answer_f1", "no_answer_exact_match", "no_answer_f1",
             "loss"),
    main_metric="f1", main_mode="max", checks=_check_stride,
    serving=Serving(reads="qa", outputs=("start_logits", "end_logits"), auto_class="AutoModelForQuestionAnswering")),)
