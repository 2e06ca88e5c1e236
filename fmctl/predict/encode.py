"""Model inputs from raw items, per task, in two flavours.

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

# An encoder turns a list of item values into (feed, errors): feed maps input names to
# numpy arrays for the items that encoded; errors maps a list position to a message.
Encoded = tuple[dict[str, Any], dict[int, str]]


class LightTextEncoder:
    """The copied tokenizer.json through the `tokenizers` library: truncation to the
    training max_length (longest first for pairs), right padding to a multiple of 8."""

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
        return {k: feed[k] for k in self.input_names}, {}


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
        texts = [v["text"] for v in values]
        pairs = [v["text_pair"] or "" for v in values] if self.pairs else None
        batch = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in batch]
        collated = self.collate([{k: batch[k][i] for k in keys} for i in range(len(texts))])
        return {k: collated[k].numpy() for k in self.input_names if k in collated}, {}


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
        from PIL import Image

        p = self.prep
        size = int(p["image_size"])
        scale = math.floor(size / float(p["crop_pct"]))
        resample = _PIL_FILTERS.get(p["interpolation"], 2)
        with Image.open(path) as image:
            image = image.convert(p["color_mode"])
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
        from PIL import Image

        with Image.open(path) as image:
            return self.transform(image.convert(self.mode)).numpy()

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
