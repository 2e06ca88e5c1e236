"""Model inputs from raw items, per task, in two flavours (texts, images, words, QA windows).

`light` encoders need only `tokenizers`, Pillow and numpy, so predicting with an ONNX
export never imports torch; they follow the export manifest's preprocessing. `reference`
encoders are fmctl's own training/eval path (transformers tokenizer and collator, timm
transform) and serve run folders. tests/test_predict.py checks that both give the same
inputs, which is what makes an ONNX export and its run folder agree on labels.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from fmctl.data.images import open_image

# An encoder turns a list of item values into (feed, errors): feed maps input names to
# numpy arrays for the items that encoded; errors maps a list position to a message.
Encoded = tuple[dict[str, Any], dict[int, str]]


class LightTextEncoder:
    """The copied tokenizer.json through the `tokenizers` library: truncation to the
    training max_length (longest first for pairs), right padding to the manifest's pad_to_multiple_of."""

    def __init__(self, folder: Path, prep: dict[str, Any], input_names: list[str]):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / prep["tokenizer_file"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(prep["max_length"]), strategy=prep.get("truncation", "longest_first"))
        self.pad_id = int(prep["pad_token_id"])
        self.multiple = int(prep.get("pad_to_multiple_of", 1)) or 1
        self.pairs = prep.get("text_pair_column") is not None
        self.input_names = input_names

    def __call__(self, values: list[dict[str, Any]]) -> Encoded:
        import numpy as np

        values, errors = _without_empty_texts(values)
        if not values:
            return {}, errors
        inputs = [(v["text"], v["text_pair"] or "") if self.pairs else v["text"] for v in values]
        encodings = self.tokenizer.encode_batch(inputs, add_special_tokens=True)
        width = max(1, max(len(e.ids) for e in encodings))
        width = math.ceil(width / self.multiple) * self.multiple
        n = len(encodings)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for i, enc in enumerate(encodings):
            ids[i, :len(enc.ids)] = enc.ids
            mask[i, :len(enc.ids)] = 1
            types[i, :len(enc.ids)] = enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: feed[k] for k in self.input_names}, errors


class ReferenceTextEncoder:
    """fmctl's own path: the run's transformers tokenizer and the training collator."""

    def __init__(self, tokenizer: Any, max_length: int, pairs: bool, input_names: list[str]):
        from fmctl.data.text import PaddingCollator

        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pairs = pairs
        self.collate = PaddingCollator(tokenizer.pad_token_id)
        self.input_names = input_names

    def __call__(self, values: list[dict[str, Any]]) -> Encoded:
        values, errors = _without_empty_texts(values)
        if not values:
            return {}, errors
        texts = [v["text"] for v in values]
        pairs = [v["text_pair"] or "" for v in values] if self.pairs else None
        batch = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in batch]
        collated = self.collate([{k: batch[k][i] for k in keys} for i in range(len(texts))])
        return {k: collated[k].numpy() for k in self.input_names if k in collated}, errors


def _without_empty_texts(values: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The values with a text to classify, and an error for each empty one. Why: a model
    given only [CLS] [SEP] still answers with a confident label, which says nothing about
    the row; the row is reported instead (as training warns about empty texts)."""
    errors = {i: "the text is empty" for i, v in enumerate(values) if not str(v.get("text") or "").strip()}
    return [v for i, v in enumerate(values) if i not in errors], errors


_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


class LightImageEncoder:
    """timm's evaluation transform, with Pillow and numpy: resize the short side to
    floor(size / crop_pct) (or both sides, crop_mode 'squash'), centre-crop, scale to
    [0, 1], normalise, NCHW. Same arithmetic as torchvision on PIL images."""

    def __init__(self, prep: dict[str, Any]):
        if prep.get("crop_mode", "center") not in ("center", "squash"):
            raise ValueError(f"crop_mode {prep['crop_mode']}")
        self.prep = prep

    def one(self, path: Path) -> Any:
        import numpy as np

        p = self.prep
        size = int(p["image_size"])
        scale = math.floor(size / float(p["crop_pct"]))
        resample = _PIL_FILTERS.get(p["interpolation"], 2)
        image = open_image(path, p["color_mode"])
        w, h = image.size
        if p.get("crop_mode", "center") == "squash":
            new = (scale, scale)
        elif w <= h:
            new = (scale, int(scale * h / w))
        else:
            new = (int(scale * w / h), scale)
        if new != (w, h):
            image = image.resize(new, resample)
        w, h = image.size
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        mean = np.asarray(p["mean"], dtype=np.float32)
        std = np.asarray(p["std"], dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1)

    def __call__(self, values: list[Path]) -> Encoded:
        return _stack_images(values, self.one)


class ReferenceImageEncoder:
    """fmctl's own path: timm's transform as training's evaluation used it."""

    def __init__(self, prep: dict[str, Any]):
        from fmctl.data.images import build_transform

        self.transform = build_transform(prep, train=False, augment=False)
        self.mode = "L" if prep["in_chans"] == 1 else "RGB"

    def one(self, path: Path) -> Any:
        return self.transform(open_image(path, self.mode)).numpy()

    def __call__(self, values: list[Path]) -> Encoded:
        return _stack_images(values, self.one)


def _stack_images(values: list[Path], one: Callable[[Path], Any]) -> Encoded:
    """Decode each image on its own, so one corrupt file costs only its own row."""
    import numpy as np

    arrays, errors = [], {}
    for i, path in enumerate(values):
        try:
            arrays.append(one(path))
        except Exception as exc:  # Pillow raises many types for broken files
            errors[i] = f"{path}: cannot decode image ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    feed = {"pixel_values": np.stack(arrays).astype(np.float32)} if arrays else {}
    return feed, errors


# Encoders that return a third element, `meta`: per row of the feed, what the decoder needs
# to turn that row's outputs back into the user's units (words, context characters).
EncodedWithMeta = tuple[dict[str, Any], dict[int, str], list[Any]]


def _words(value: Any) -> list[str]:
    """A row's words: a list as given (JSONL), or a string split on whitespace."""
    if isinstance(value, list):
        return [str(w) for w in value]
    return str(value).split()


def _pad_rows(rows: list[tuple[list[int], list[int]]], pad_id: int, multiple: int, names: list[str]) -> dict[str, Any]:
    """Right-padded int64 arrays from (ids, type_ids) rows, with the attention mask."""
    import numpy as np

    width = max(1, max(len(ids) for ids, _ in rows))
    width = math.ceil(width / multiple) * multiple
    n = len(rows)
    feed = {"input_ids": np.full((n, width), pad_id, dtype=np.int64), "attention_mask": np.zeros((n, width), np.int64),
            "token_type_ids": np.zeros((n, width), dtype=np.int64)}
    for i, (ids, types) in enumerate(rows):
        feed["input_ids"][i, :len(ids)] = ids
        feed["attention_mask"][i, :len(ids)] = 1
        feed["token_type_ids"][i, :len(types)] = types
    return {k: feed[k] for k in names}


class LightWordEncoder:
    """Token classification with `tokenizers`: the row's words as pre-split input (what
    transformers' is_split_into_words does), truncation to max_length; meta per row is
    (words, index of the word each token starts or -1) as fmctl.data.alignment makes it."""

    def __init__(self, folder: Path, prep: dict[str, Any], input_names: list[str]):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / prep["tokenizer_file"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(prep["max_length"]))
        self.pad_id = int(prep["pad_token_id"])
        self.multiple = int(prep.get("pad_to_multiple_of", 1)) or 1
        self.input_names = input_names

    def __call__(self, values: list[dict[str, Any]]) -> EncodedWithMeta:
        from fmctl.data.alignment import first_pieces

        kept, errors = _split_words(values)
        if not kept:
            return {}, errors, []
        encodings = self.tokenizer.encode_batch(kept, is_pretokenized=True, add_special_tokens=True)
        rows = [(e.ids, e.type_ids) for e in encodings]
        meta = [(w, first_pieces(e.word_ids)) for w, e in zip(kept, encodings)]
        return _pad_rows(rows, self.pad_id, self.multiple, self.input_names), errors, meta


class ReferenceWordEncoder:
    """fmctl's own path for token classification: the run's transformers tokenizer with
    is_split_into_words, as TokenClassification._encode does."""

    def __init__(self, tokenizer: Any, max_length: int, input_names: list[str]):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.input_names = input_names

    def __call__(self, values: list[dict[str, Any]]) -> EncodedWithMeta:
        from fmctl.data.alignment import first_pieces

        kept, errors = _split_words(values)
        if not kept:
            return {}, errors, []
        encoded = self.tokenizer(kept, is_split_into_words=True, truncation=True, max_length=self.max_length)
        types = encoded.get("token_type_ids") or [[0] * len(ids) for ids in encoded["input_ids"]]
        rows = list(zip(encoded["input_ids"], types))
        meta = [(w, first_pieces(encoded.word_ids(i))) for i, w in enumerate(kept)]
        return _pad_rows(rows, self.tokenizer.pad_token_id, 1, self.input_names), errors, meta


def _split_words(values: list[dict[str, Any]]) -> tuple[list[list[str]], dict[int, str]]:
    """The word lists to encode (rows with words), and an error for each empty row."""
    words = [_words(v["text"]) for v in values]
    errors = {i: "no words to tag (the text is empty)" for i, w in enumerate(words) if not w}
    return [w for i, w in enumerate(words) if i not in errors], errors


class LightQAEncoder:
    """Extractive QA with `tokenizers`: question + context, the context cut into windows of
    max_length tokens that overlap by `stride` (only_second truncation with overflow, as
    transformers does it); meta per window is (row position, Window with the context
    character span of each token and the no-answer token)."""

    def __init__(self, folder: Path, prep: dict[str, Any], input_names: list[str]):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / prep["tokenizer_file"]))
        self.tokenizer.no_padding()
        self.counter = Tokenizer.from_file(str(folder / prep["tokenizer_file"]))  # question lengths, uncut
        self.counter.no_padding()
        self.counter.no_truncation()
        self.max_length = int(prep["max_length"])
        self.stride = int(prep["stride"])
        self.tokenizer.enable_truncation(self.max_length, stride=self.stride, strategy="only_second")
        self.cls_id = prep.get("cls_token_id")
        self.pad_id = int(prep["pad_token_id"])
        self.multiple = int(prep.get("pad_to_multiple_of", 1)) or 1
        self.special = self.tokenizer.post_processor.num_special_tokens_to_add(True) if \
            self.tokenizer.post_processor else 0
        self.input_names = input_names

    def __call__(self, values: list[dict[str, Any]]) -> EncodedWithMeta:
        from fmctl.tasks.extractive_qa import Window

        rows, meta, errors = [], [], {}
        for pos, value in enumerate(values):
            question, context = value["question"], value["context"]
            error = _empty_qa_field(value) or _question_fits(len(self.counter.encode(question, add_special_tokens=False).ids),
                                   self.max_length - self.special - self.stride, self.max_length, self.stride)
            if error:
                errors[pos] = error
                continue
            first = self.tokenizer.encode(question, context)
            for window in [first, *first.overflowing]:
                sequence = window.sequence_ids
                offsets = [tuple(span) if sequence[k] == 1 else None for k, span in enumerate(window.offsets)]
                null = window.ids.index(self.cls_id) if self.cls_id in window.ids else 0
                rows.append((window.ids, window.type_ids))
                meta.append((pos, Window(pos, offsets, null)))
        feed = _pad_rows(rows, self.pad_id, self.multiple, self.input_names) if rows else {}
        return feed, errors, meta


class ReferenceQAEncoder:
    """fmctl's own path for extractive QA: the run's transformers tokenizer with overflowing
    windows and offset mapping, as ExtractiveQA._encode does."""

    def __init__(self, tokenizer: Any, max_length: int, stride: int, input_names: list[str]):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stride = stride
        self.input_names = input_names

    def __call__(self, values: list[dict[str, Any]]) -> EncodedWithMeta:
        from fmctl.tasks.extractive_qa import Window

        tok = self.tokenizer
        room = self.max_length - tok.num_special_tokens_to_add(pair=True) - self.stride
        errors, kept = {}, []
        for pos, value in enumerate(values):
            error = _empty_qa_field(value) or _question_fits(
                len(tok(value["question"], add_special_tokens=False)["input_ids"]), room, self.max_length, self.stride)
            if error:
                errors[pos] = error
            else:
                kept.append(pos)
        if not kept:
            return {}, errors, []
        encoded = tok([values[p]["question"] for p in kept], [values[p]["context"] for p in kept],
                      truncation="only_second", max_length=self.max_length, stride=self.stride,
                      return_overflowing_tokens=True, return_offsets_mapping=True)
        rows, meta = [], []
        for f, ids in enumerate(encoded["input_ids"]):
            pos = kept[encoded["overflow_to_sample_mapping"][f]]
            sequence = encoded.sequence_ids(f)
            offsets = [tuple(span) if sequence[k] == 1 else None for k, span in enumerate(encoded["offset_mapping"][f])]
            null = ids.index(tok.cls_token_id) if tok.cls_token_id in ids else 0
            types = encoded["token_type_ids"][f] if "token_type_ids" in encoded else [0] * len(ids)
            rows.append((ids, types))
            meta.append((pos, Window(pos, offsets, null)))
        return _pad_rows(rows, tok.pad_token_id, 1, self.input_names), errors, meta


def _empty_qa_field(value: dict[str, Any]) -> str | None:
    """A blank question or context has no answer to look for; as a row error, not a
    made-up span (the model would otherwise still pick some tokens)."""
    for field in ("question", "context"):
        if not str(value[field]).strip():
            return f"the {field} is empty"
    return None


def _question_fits(length: int, room: int, max_length: int, stride: int) -> str | None:
    if length >= room:
        return (f"the question is {length} tokens, which leaves no room for the context in max_length={max_length} "
                f"with doc_stride={stride}; shorten the question")
    return None
