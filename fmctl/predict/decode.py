"""Model outputs (numpy) back into what a user asked for, per task, without torch.

Each decoder takes the encoded values, the outputs (a list of arrays in the export's
output order) and the encoder's per-feed-row meta, and returns one record per value:
a label with probabilities, a number, a label set, a tag per word, an answer span.
"""
from __future__ import annotations

from typing import Any


def _softmax(logits: Any) -> Any:
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


def _probabilities(names: list[str], row: Any) -> dict[str, float]:
    return {n: round(float(p), 6) for n, p in zip(names, row)}


class SoftmaxLabel:
    """The argmax label and the softmax probabilities, of the logits divided by the
    postprocessing's `temperature` when `fmctl eval eval.temperature_scaling=true` fitted
    one (the exported logits stay model/'s; the label is the same either way)."""

    columns = ["label", "probabilities"]

    def __init__(self, label_names: list[str], post: dict[str, Any]):
        self.label_names = label_names
        self.temperature = float(post.get("temperature") or 1.0)

    def __call__(self, values: list[Any], outputs: list[Any], meta: Any) -> list[dict[str, Any]]:
        import numpy as np

        logits = np.asarray(outputs[0], dtype=np.float64) / self.temperature
        return [{"label": self.label_names[int(p.argmax())], "probabilities": _probabilities(self.label_names, p)}
                for p in _softmax(logits)]


class RegressionValue:
    columns = ["prediction"]

    def __init__(self, label_names: list[str], post: dict[str, Any]):
        pass

    def __call__(self, values: list[Any], outputs: list[Any], meta: Any) -> list[dict[str, Any]]:
        return [{"prediction": round(float(v), 6)} for v in outputs[0][:, 0]]


class ThresholdLabels:
    columns = ["labels", "probabilities"]

    def __init__(self, label_names: list[str], post: dict[str, Any]):
        self.label_names = label_names
        self.threshold = float(post["threshold"])

    def __call__(self, values: list[Any], outputs: list[Any], meta: Any) -> list[dict[str, Any]]:
        import numpy as np

        probs = 1.0 / (1.0 + np.exp(-np.asarray(outputs[0], dtype=np.float64)))
        return [{"labels": [n for n, p in zip(self.label_names, row) if p >= self.threshold],
                 "probabilities": _probabilities(self.label_names, row)} for row in probs]


class WordTags:
    """The tag of each word is the argmax at its first piece; words cut off by max_length
    get the fill label ('O'), as in training's evaluation."""

    columns = ["words", "tags"]

    def __init__(self, label_names: list[str], post: dict[str, Any]):
        self.label_names = label_names
        fill = post.get("fill_label") or ("O" if "O" in label_names else label_names[0])
        self.fill = label_names.index(fill)

    def __call__(self, values: list[Any], outputs: list[Any], meta: list[Any]) -> list[dict[str, Any]]:
        from fmctl.data.alignment import word_predictions

        token_ids = outputs[0].argmax(-1)
        records = []
        for row, (words, word_index) in enumerate(meta):
            ids, _ = word_predictions(word_index, token_ids[row].tolist(), len(words), self.fill)
            records.append({"words": words, "tags": [self.label_names[i] for i in ids]})
        return records


class AnswerSpan:
    """The best span over every window of a question (fmctl.tasks.extractive_qa.best_answer),
    as text, score and character offsets into the context."""

    columns = ["answer", "score", "start", "end"]

    def __init__(self, label_names: list[str], post: dict[str, Any]):
        self.post = post

    def __call__(self, values: list[Any], outputs: list[Any], meta: list[Any]) -> list[dict[str, Any]]:
        from fmctl.tasks.extractive_qa import best_answer

        start_logits, end_logits = outputs
        grouped: dict[int, list[Any]] = {}
        for k, (pos, window) in enumerate(meta):
            n = len(window.offsets)
            grouped.setdefault(pos, []).append((window, start_logits[k, :n], end_logits[k, :n]))
        records = []
        p = self.post
        for pos in sorted(grouped):
            answer = best_answer(grouped[pos], values[pos]["context"], int(p["n_best"]), int(p["max_answer_length"]),
                                 bool(p["allow_no_answer"]), float(p["null_score_threshold"]))
            record = {"answer": answer.text, "score": round(answer.score, 4), "start": answer.start, "end": answer.end}
            if answer.null_score_diff is not None:
                record["null_score_diff"] = round(answer.null_score_diff, 4)
            records.append(record)
        return records


class PixelMask:
    """Segmentation: each image's logits resized bilinearly to the image's own size (the
    model saw it squashed to its input size), then the likeliest class per pixel. The
    record holds the mask (an array: predict writes it as a PNG, fmctl.predict.masks) and
    the share of the image's pixels each predicted class covers."""

    columns = ["mask", "classes"]

    def __init__(self, label_names: list[str], post: dict[str, Any]):
        self.label_names = label_names

    def __call__(self, values: list[Any], outputs: list[Any], meta: Any) -> list[dict[str, Any]]:
        import numpy as np

        from fmctl.data.masks import displayed_size

        records = []
        for path, logits in zip(values, outputs[0]):
            mask = resized_argmax(np.asarray(logits, dtype=np.float32), displayed_size(path))
            ids, counts = np.unique(mask, return_counts=True)
            records.append({"mask": mask, "classes": {self.label_names[int(i)]: round(float(c) / mask.size, 6)
                                                      for i, c in zip(ids, counts)}})
        return records


def resized_argmax(logits: Any, size: tuple[int, int]) -> Any:
    """(K, h, w) logits -> (height, width) class indices at `size` = (width, height):
    every class's map resized bilinearly with Pillow (half-pixel centres, as
    torch's interpolate with align_corners=False), then the argmax."""
    import numpy as np
    from PIL import Image

    if tuple(size) == (logits.shape[2], logits.shape[1]):
        return logits.argmax(0).astype(np.int64)
    maps = [np.asarray(Image.fromarray(channel, mode="F").resize(size, Image.Resampling.BILINEAR))
            for channel in logits]
    return np.stack(maps).argmax(0).astype(np.int64)


class Caption:
    """Captioning: the generated token ids of each image (start token dropped) cut at the
    end token and decoded with the tokenizer saved beside the model (`tokenizers` only);
    post["tokenizer"] is its folder, relative to the run or export folder predict opened
    (post["target_folder"])."""

    columns = ["caption"]

    def __init__(self, label_names: list[str], post: dict[str, Any]):
        from pathlib import Path

        from tokenizers import Tokenizer

        folder = Path(post.get("target_folder", ".")) / post["tokenizer"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.eos = int(post["eos_token_id"])

    def __call__(self, values: list[Any], outputs: list[Any], meta: Any) -> list[dict[str, Any]]:
        records = []
        for row in outputs[0]:
            ids = [int(i) for i in row]
            ids = ids[: ids.index(self.eos)] if self.eos in ids else ids
            records.append({"caption": self.tokenizer.decode(ids, skip_special_tokens=True).strip()})
        return records


# postprocessing kind (export manifest) -> decoder
DECODERS = {"softmax_label": SoftmaxLabel, "regression": RegressionValue, "sigmoid_threshold": ThresholdLabels,
            "word_tags": WordTags, "answer_span": AnswerSpan, "mask": PixelMask, "caption": Caption}
