"""Zero-shot classification with a two-tower model: class names become captions through
templates, and each image takes the class whose caption embedding is nearest.

As in CLIP, every class name is written into every template ("an icon of {}", "a
picture of {}"), the normalised text embeddings of one class are averaged and normalised
again, and an image's logits are scale x cosine to each class; averaging over several
wordings makes the scores depend less on any one phrasing. The result is scored with
image classification's metrics (accuracy, macro-F1, top-5, per-class table, confusion
matrix). A folder name's underscores are read as spaces ("file_type" -> "file type").

`prompts` and `average_prompts` use numpy only, so predict on an ONNX export shares them
without importing torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.errors import DataError


def class_phrase(name: str) -> str:
    return name.replace("_", " ").strip()


def prompts(classes: list[str], templates: list[str]) -> list[str]:
    """Class-major: every template for the first class, then for the next."""
    return [template.format(class_phrase(name)) for name in classes for template in templates]


def average_prompts(embeddings: Any, classes: int) -> Any:
    """(classes*templates, d) normalised prompt embeddings -> (classes, d): the mean over
    each class's templates, normalised (numpy arrays)."""
    import numpy as np

    grouped = np.asarray(embeddings, dtype=np.float32).reshape(classes, -1, np.asarray(embeddings).shape[-1])
    mean = grouped.mean(1)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def check_classes(classes: list[str], where: str) -> None:
    if len(classes) < 2:
        shown = f" ('{classes[0]}')" if classes else ""
        raise DataError(f"{where}: {len(classes)} class{'es' if len(classes) != 1 else ''}{shown}; zero-shot "
                        f"classification chooses between at least two")
    if len({class_phrase(c) for c in classes}) < len(classes):
        raise DataError(f"{where}: two classes read as the same words once '_' is a space; rename one")


def text_embeddings(model: Any, tokenizer: Any, texts: list[str], max_length: int, device: str,
                    batch_size: int = 64) -> Any:
    """Normalised text embeddings (numpy) of `texts`, in batches, in fp32."""
    import numpy as np
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            out.append(model.encode_text(batch["input_ids"], batch["attention_mask"],
                                         batch.get("token_type_ids")).float().cpu().numpy())
    return np.concatenate(out)


def zero_shot(model: Any, folder: Path, templates: list[str], preprocessors: dict[str, Any], max_length: int,
              batch_size: int, device: str, precision: Any) -> tuple[Any, list[Any]]:
    """(ClassificationMetrics over the folder's images, their rows) for `fmctl eval`."""
    import torch

    from fmctl.data.images import ImageDataset, build_transform, collate_images, scan_image_folder, verify_images
    from fmctl.data.labels import label_names_from
    from fmctl.loop.evaluation import make_loader, move
    from fmctl.tasks.classification import ClassificationMetrics, label_ids

    rows = scan_image_folder(Path(folder))
    classes = label_names_from(r.label for r in rows)
    check_classes(classes, f"task.zero_shot: {folder}")
    verify_images(rows)
    prep = preprocessors["image"]
    dataset = ImageDataset(rows, label_ids(rows, classes), build_transform(prep, train=False, augment=False),
                           prep["in_chans"])
    was_training = model.training
    model.eval()
    weights = average_prompts(text_embeddings(model, preprocessors["text"], prompts(classes, templates), max_length,
                                              device), len(classes))
    weights = torch.from_numpy(weights).to(device)
    metrics = ClassificationMetrics(classes)
    with torch.inference_mode(), precision.autocast():
        for batch in make_loader(dataset, batch_size, collate_images):
            batch = move(batch, device)
            image = model.encode_image(batch["pixel_values"]).float()
            metrics.update(model.scale().float() * image @ weights.T, batch, None)
    model.train(was_training)
    return metrics, rows
