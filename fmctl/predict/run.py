"""Drive a prediction: items in batches through the target, records out as they come.

Memory stays at one batch whatever the input size. Rows that fail (a missing field, an
image that does not decode) are written with their error and counted; the others are
predicted as usual.
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from fmctl.errors import DataError
from fmctl.predict import inputs
from fmctl.predict.masks import MaskFiles, masks_folder
from fmctl.predict.output import Writer, out_kind
from fmctl.predict.targets import Target, TargetInputs, open_target

# Inputs at least this large get a progress bar on a terminal (bytes of a file, images).
LARGE_FILE_BYTES = 1_000_000
LARGE_IMAGE_COUNT = 200


@dataclass
class PredictSummary:
    target: str
    rows: int = 0
    predicted: int = 0
    errors: list[str] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)


def predict(target_path: Path, *, input_file: Path | None = None, text: str | None = None,
            text_pair: str | None = None, images: Path | None = None, out: Path | None = None,
            batch_size: int = 32, text_column: str | None = None, text_pair_column: str | None = None,
            progress: bool | None = None, question_column: str | None = None, context_column: str | None = None,
            question: str | None = None, context: str | None = None, generation: Any = None,
            threads: int | None = None, masks: Path | None = None, labels: str | None = None, embed: bool = False,
            top_k: int = 0, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
            ) -> PredictSummary:
    """Predict every item of exactly one source (--input, --text, --question with --context,
    or --images) with the target. --out, the input and its columns (and for a segmentation
    model the --masks folder) are checked against what the target reads and writes before
    its model is loaded. A two-tower model is served by fmctl.predict.two_tower (--labels
    zero-shot, --text with --images retrieval, --embed)."""
    served = _two_tower(target_path, images=images, text=text, input_file=input_file, labels=labels, top_k=top_k,
                        embed=embed, out=out, batch_size=batch_size, text_column=text_column, log=log)
    if served is not None:
        return served
    if (question is None) != (context is None):
        raise DataError(f"predict: {'--question' if question is not None else '--context'} needs "
                        f"{'--context' if question is not None else '--question'} too (one question about one context)")
    given = [name for name, v in (("--input", input_file), ("--text", text), ("--question", question),
                                  ("--images", images)) if v is not None]
    if len(given) != 1:
        raise DataError(f"predict: give exactly one of --input FILE, --text TEXT, --question Q --context C, "
                        f"--images DIR (got {', '.join(given) if given else 'none'})")
    if text_pair is not None and text is None:
        raise DataError("--text-pair: give it with --text (the pair's first text)")
    out_kind(out)
    opened: dict[str, Any] = {}

    def open_items(spec: TargetInputs) -> None:
        if "mask" in spec.output_columns:
            opened["masks"] = masks_folder(masks, out)
        if question is not None:
            if spec.input_kind != "qa":
                raise DataError(f"--question: {spec.path} is a {spec.task} model, not extractive_qa; "
                                f"give --text or --input")
            opened["items"] = (iter([inputs.Item(1, "--question", {"question": question, "context": context},
                                                 {"question": question, "context": context})]), inputs.Progress(None))
        else:
            opened["items"] = _items(spec, input_file, text, text_pair, images, text_column, text_pair_column,
                                     question_column, context_column)

    target = open_target(target_path, before_load=open_items, generation=generation, threads=threads)
    items, where = opened["items"]
    if target.input_kind == "image":
        id_fields = ["image"]
    elif target.input_kind == "qa":
        id_fields = ["question", "context"]
    elif target.input_kind in ("source", "prompt"):
        id_fields = [target.input_kind]
    else:
        id_fields = ["text", "text_pair"] if target.text_pair_column else ["text"]
    log(f"predict: {target.description} at {target.path}, task {target.task}")
    summary = PredictSummary(str(target.path))
    writer = Writer(out, id_fields, target.label_names, target.output_columns, lambda: where.has_id)
    files = MaskFiles(opened["masks"]) if "masks" in opened else None
    complete = False
    previous = _sigterm_as_interrupt()
    try:
        with _progress_bar(where, progress) as advance:
            for chunk in _chunks(items, batch_size):
                for record in _predict_chunk(target, chunk):
                    writer.write(files.write(record) if files is not None else record)
                    summary.rows += 1
                    if "error" in record:
                        summary.errors.append(record["error"])
                    else:
                        summary.predicted += 1
                        if "label" in record:
                            summary.label_counts[record["label"]] = summary.label_counts.get(record["label"], 0) + 1
                advance()
        complete = True
    finally:
        writer.close(complete)
        if files is not None:
            files.close(complete)
        signal.signal(signal.SIGTERM, previous)
        if not complete and out is not None:
            log(f"predict stopped after {summary.rows} rows; they are in {writer.partial}"
                + (f", and {out} is as it was" if Path(out).exists() else ""))
    for message in summary.errors[:20]:
        log(f"row error: {message}")
    if len(summary.errors) > 20:
        log(f"... and {len(summary.errors) - 20} more row errors (each is in the output with its row)")
    log(f"predicted {summary.predicted} of {summary.rows} rows ({len(summary.errors)} errors)"
        + (f"; written: {out}" if out else "") + (f"; masks: {files.folder}" if files is not None else ""))
    return summary


def _two_tower(target_path: Path, *, labels: str | None, embed: bool, log: Callable[[str], None],
               **flags: Any) -> PredictSummary | None:
    """A two-tower model's predictions (fmctl.predict.two_tower), or None for any other
    model, which --labels and --embed do not apply to."""
    from fmctl.predict import towers

    if towers.serves(target_path):
        from fmctl.predict import two_tower

        done = two_tower.predict(target_path, labels=labels, embed=embed, log=log, **flags)
        return PredictSummary(str(target_path), rows=done["rows"], predicted=done["rows"] - len(done["errors"]),
                              errors=done["errors"])
    task = towers.task_of(target_path)  # None: not a run or export folder, which predict reports itself
    for flag, given in (("--labels", labels is not None), ("--embed", embed)):
        if given and task is not None:
            raise DataError(f"{flag}: {target_path} is a {task} model; {flag} needs a two-tower (contrastive) "
                            f"model's run or export folder")
    return None


def _sigterm_as_interrupt() -> Any:
    """SIGTERM stops predict as Ctrl-C does, so the output is closed (a gzip stream
    finished) and the partial rows kept; returns the handler to restore."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return signal.getsignal(signal.SIGTERM)


def _items(target: TargetInputs, input_file: Path | None, text: str | None, text_pair: str | None,
           images: Path | None, text_column: str | None, text_pair_column: str | None,
           question_column: str | None = None, context_column: str | None = None
           ) -> tuple[Iterator[inputs.Item], inputs.Progress]:
    """The items of the one source given, opened (and its columns checked) against what
    the target reads."""
    _check_pairs(target, text, text_pair, text_pair_column)
    if images is not None:
        if target.input_kind != "image":
            raise DataError(f"--images: {target.path} is a {target.task} model; give --input FILE or --text")
        return inputs.image_items(Path(images))
    if target.input_kind == "image":
        raise DataError(f"{'--text' if text is not None else '--input'}: {target.path} is an {target.task} model; "
                        f"give --images DIR (a folder of images or one image file)")
    if target.input_kind == "qa":
        if text is not None:
            raise DataError(f"--text: {target.path} is an extractive_qa model; give --question Q --context C, or "
                            f"--input FILE (CSV, TSV, JSONL or Parquet) with '{target.columns['question']}' and "
                            f"'{target.columns['context']}' columns")
        columns = dict(target.columns)
        columns.update({role: name for role, name in (("question", question_column), ("context", context_column))
                        if name})
        return inputs.text_items(Path(input_file), columns["question"], None, columns=columns)
    if target.input_kind in ("source", "prompt"):
        role = target.input_kind
        if text is not None:
            return iter([inputs.Item(1, "--text", {role: text}, {role: text})]), inputs.Progress(None)
        columns = {role: text_column or target.columns[role]}
        return inputs.text_items(Path(input_file), columns[role], None, columns=columns)
    if text is not None:
        return inputs.single_text(text, text_pair)
    column = text_column or target.text_column or "text"
    pair = text_pair_column or target.text_pair_column
    return inputs.text_items(Path(input_file), column, pair, words=target.input_kind == "words")


def _check_pairs(target: TargetInputs, text: str | None, text_pair: str | None, text_pair_column: str | None) -> None:
    """A pair model given one text, or a one-text model given a pair, would predict
    something that looks right and means nothing (an empty second text, a pair dropped
    but echoed in the output): both are refused. The run's data.text_pair_column (an
    export's preprocessing.text_pair_column) says which the model reads."""
    pair_flags = [flag for flag, v in (("--text-pair", text_pair), ("--text-pair-column", text_pair_column))
                  if v is not None]
    if target.input_kind != "text":
        if pair_flags:
            raise DataError(f"{pair_flags[0]}: {target.path} is a model for {target.task}; it reads no text pairs")
        return
    if target.text_pair_column is None:
        if pair_flags:
            raise DataError(f"{pair_flags[0]}: this model reads one text ('{target.text_column}'); "
                            f"{pair_flags[0]} is not used")
        return
    if text is not None and text_pair is None:
        raise DataError(f"--text: this model reads text pairs ('{target.text_column}', "
                        f"'{target.text_pair_column}'); give --text-pair too")


def _chunks(items: Iterator[inputs.Item], size: int) -> Iterator[list[inputs.Item]]:
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk


def _predict_chunk(target: Target, chunk: list[inputs.Item]) -> list[dict[str, Any]]:
    good = [i for i, item in enumerate(chunk) if item.error is None]
    records: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(chunk):
        if item.error is not None:
            records[i] = {"row": item.row, **item.fields, "error": item.error}
    if good:
        for i, result in zip(good, target.predict([chunk[i].value for i in good]), strict=True):
            item = chunk[i]
            if isinstance(result, str):
                message = result if result.startswith(item.where) else f"{item.where}: {result}"
                records[i] = {"row": item.row, **item.fields, "error": message}
            else:
                records[i] = {"row": item.row, **item.fields, **result}
    return [records[i] for i in range(len(chunk))]


class _progress_bar:
    """A rich progress bar on stderr for large inputs on a terminal; a no-op otherwise."""

    def __init__(self, where: inputs.Progress, wanted: bool | None):
        large = where.total is not None and where.total >= (
            LARGE_IMAGE_COUNT if where.unit == "images" else LARGE_FILE_BYTES)
        show = wanted if wanted is not None else (large and sys.stderr.isatty() and os.environ.get("CI") is None)
        self.where = where
        self.progress = None
        if show and where.total:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

            self.progress = Progress("predict", BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)

    def __enter__(self) -> Callable[[], None]:
        if self.progress is None:
            return lambda: None
        self.progress.start()
        task = self.progress.add_task("predict", total=self.where.total)
        return lambda: self.progress.update(task, completed=self.where.position() if self.where.position else 0)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
