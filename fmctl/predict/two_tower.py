"""`fmctl predict` for a two-tower model (run folder or ONNX export):

- zero-shot: `--images DIR --labels "a,b,c"`: each label written into the model's
  templates, the prompt embeddings averaged per label; per image the likeliest label and
  every label's probability (softmax over logit_scale x cosine; for a sigmoid-loss model
  each label's own sigmoid, which need not sum to 1);
- retrieval: `--text "query" --images DIR [--top-k K]` (or `--input` with one query per
  row): per query its K best images (0: all) with their cosine, one output row each;
- embeddings: `--embed` with `--images` or `--text`/`--input`: one row per input with its
  L2-normalised embedding, for a vector index.

Images are read and embedded in batches of --batch-size; retrieval keeps the images'
embeddings (4 bytes x embed_dim each) to rank them for every query. An image that does
not decode is its row's error; the others go on.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from fmctl.errors import DataError
from fmctl.predict import inputs
from fmctl.predict.output import Writer, out_kind
from fmctl.predict.towers import Towers, open_towers

Log = Callable[[str], None]


def predict(target: Path, *, images: Path | None, text: str | None, input_file: Path | None, labels: str | None,
            top_k: int, embed: bool, out: Path | None, batch_size: int, text_column: str | None,
            log: Log = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """Run the one mode the flags ask for; returns a summary (rows, errors, mode)."""
    mode = _mode(target, images, text, input_file, labels, embed)
    classes = _labels(labels) if mode == "zero_shot" else []
    out_kind(out)
    if images is not None:
        items, _ = inputs.image_items(Path(images))  # a missing folder is refused before the model loads
    towers = open_towers(target)
    log(f"predict: {towers.description} at {target}, two-tower ({mode.replace('_', '-')})")
    if mode == "zero_shot":
        return _write(out, ["image"], classes, ["label", "probabilities"], _zero_shot(towers, items, classes,
                                                                                     batch_size), log)
    if mode == "embed_images":
        return _write(out, ["image"], [], ["embedding"], _embed_images(towers, items, batch_size), log)
    queries = _queries(text, input_file, text_column or towers.text_column)
    if mode == "embed_texts":
        return _write(out, ["text"], [], ["embedding"], _embed_texts(towers, queries, batch_size), log)
    return _write(out, ["query"], [], ["rank", "image", "score"], _retrieve(towers, queries, items, top_k, batch_size,
                                                                            log), log)


def _mode(target: Path, images: Path | None, text: str | None, input_file: Path | None, labels: str | None,
          embed: bool) -> str:
    has_text = text is not None or input_file is not None
    if text is not None and input_file is not None:
        raise DataError("predict: give --text or --input, not both")
    if embed:
        if labels is not None or (images is not None) == has_text:
            raise DataError("--embed: give --images DIR or --text/--input (one of them), without --labels")
        return "embed_images" if images is not None else "embed_texts"
    if labels is not None:
        if images is None or has_text:
            raise DataError("--labels: zero-shot classification reads --images DIR (not --text or --input)")
        return "zero_shot"
    if images is not None and has_text:
        return "retrieve"
    raise DataError(f"predict: {target} is a two-tower (contrastive) model; give --images DIR --labels \"a,b,c\" "
                    f"(zero-shot), --text QUERY --images DIR [--top-k K] (retrieval), or --embed with --images or "
                    f"--text")


def _labels(labels: str) -> list[str]:
    names = [name.strip() for name in labels.split(",") if name.strip()]
    if len(names) < 2:
        raise DataError(f"--labels: zero-shot classification chooses between at least two labels, got "
                        f"{len(names)} ('{labels}'); give them comma-separated, e.g. --labels \"cat,dog\"")
    if len(set(names)) < len(names):
        raise DataError(f"--labels: '{labels}' names a label twice")
    return names


def _queries(text: str | None, input_file: Path | None, column: str) -> list[inputs.Item]:
    if text is not None:
        if not text.strip():
            raise DataError("--text: the query is empty")
        return [inputs.Item(1, "--text", {"text": text}, {"text": text, "text_pair": None})]
    items, _ = inputs.text_items(Path(input_file), column, None)
    return list(items)


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _embedded(towers: Towers, items: Iterator[inputs.Item], batch_size: int) -> Iterator[tuple[inputs.Item, Any]]:
    """(item, embedding row or error message) for every image, in order."""
    for chunk in _chunks(items, batch_size):
        rows, errors = towers.images([item.value for item in chunk])
        kept = iter(rows)
        for i, item in enumerate(chunk):
            yield item, errors[i] if i in errors else next(kept)


def _zero_shot(towers: Towers, items: Iterator[inputs.Item], classes: list[str], batch_size: int) -> Iterator[dict]:
    import numpy as np

    from fmctl.tasks.zero_shot import average_prompts, prompts

    weights = average_prompts(towers.texts(prompts(classes, towers.templates)), len(classes))
    for item, row in _embedded(towers, items, batch_size):
        if isinstance(row, str):
            yield {"row": item.row, **item.fields, "error": row}
            continue
        logits = towers.logit_scale * (np.asarray(row, dtype=np.float64) @ weights.T)
        if towers.logit_bias is not None:
            probs = 1 / (1 + np.exp(-(logits + towers.logit_bias)))
        else:
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
        yield {"row": item.row, **item.fields, "label": classes[int(logits.argmax())],
               "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs)}}


def _embed_images(towers: Towers, items: Iterator[inputs.Item], batch_size: int) -> Iterator[dict]:
    for item, row in _embedded(towers, items, batch_size):
        if isinstance(row, str):
            yield {"row": item.row, **item.fields, "error": row}
        else:
            yield {"row": item.row, **item.fields, "embedding": [round(float(v), 7) for v in row]}


def _embed_texts(towers: Towers, queries: list[inputs.Item], batch_size: int) -> Iterator[dict]:
    for chunk in _chunks(iter(queries), batch_size):
        good = [q for q in chunk if q.error is None and str(q.value["text"]).strip()]
        rows = iter(towers.texts([q.value["text"] for q in good]) if good else [])
        for q in chunk:
            if q.error is not None or q not in good:
                yield {"row": q.row, **q.fields, "error": q.error or f"{q.where}: the text is empty"}
            else:
                yield {"row": q.row, **q.fields, "embedding": [round(float(v), 7) for v in next(rows)]}


def _retrieve(towers: Towers, queries: list[inputs.Item], items: Iterator[inputs.Item], top_k: int, batch_size: int,
              log: Log) -> Iterator[dict]:
    import numpy as np

    paths, rows = [], []
    for item, row in _embedded(towers, items, batch_size):
        if isinstance(row, str):
            log(f"row error: {row} (left out of the search)")
        else:
            paths.append(str(item.value))
            rows.append(row)
    if not rows:
        raise DataError("--images: no image decoded; nothing to search")
    index = np.stack(rows)
    for chunk in _chunks(iter(queries), batch_size):
        good = [q for q in chunk if q.error is None and str(q.value["text"]).strip()]
        scores = index @ np.asarray(towers.texts([q.value["text"] for q in good])).T if good else None
        for q in chunk:
            if q not in good:
                yield {"row": q.row, "query": q.fields.get("text"), "error": q.error or f"{q.where}: the query is empty"}
                continue
            column = scores[:, good.index(q)]
            order = np.argsort(-column, kind="stable")[: top_k or len(column)]
            for rank, j in enumerate(order, 1):
                yield {"row": q.row, "query": q.value["text"], "rank": rank, "image": paths[j],
                       "score": round(float(column[j]), 6)}


def _write(out: Path | None, id_fields: list[str], label_names: list[str], columns: list[str],
           records: Iterator[dict], log: Log) -> dict[str, Any]:
    writer = Writer(out, id_fields, label_names, columns)
    summary: dict[str, Any] = {"rows": 0, "errors": []}
    complete = False
    try:
        for record in records:
            writer.write(record)
            summary["rows"] += 1
            if "error" in record:
                summary["errors"].append(record["error"])
        complete = True
    finally:
        writer.close(complete)
    for message in summary["errors"][:20]:
        log(f"row error: {message}")
    log(f"wrote {summary['rows']} rows ({len(summary['errors'])} errors)" + (f" to {out}" if out else ""))
    return summary
