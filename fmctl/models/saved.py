"""What a saved model/ folder says about itself: its label names, read from its
config.json, and the softmax temperature `fmctl eval` fitted, from temperature.json.

Label names come back from two layouts: transformers writes id2label, timm's
save_for_hf writes what fmctl adds to its config (label_names) and the class count.
Every verb that reads a saved model's labels (eval, export, predict, customize) asks here.

The temperature lives in a file of its own beside the weights: transformers and timm
ignore it, so model/ loads as before, and a model fine-tuned from this one does not
inherit it (config.json keys would be carried over by save_pretrained).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def saved_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))


def saved_label_names(model_dir: Path) -> list[str]:
    """The label names a saved model/ carries: transformers' id2label, or the label_names
    fmctl writes into a timm config.json (else class indices, as timm counts them)."""
    config = saved_config(Path(model_dir))
    if config.get("id2label"):
        id2label = config["id2label"]
        return [id2label[k] for k in sorted(id2label, key=int)]
    names = config.get("label_names") or config.get("pretrained_cfg", {}).get("label_names")
    if names:
        return list(names)
    return [str(i) for i in range(int(config["num_classes"]))] if config.get("num_classes") else []


TEMPERATURE_FILE = "temperature.json"


def saved_temperature(model_dir: Path) -> float | None:
    """The temperature predict and exports divide the logits by, or None."""
    path = Path(model_dir) / TEMPERATURE_FILE
    if not path.is_file():
        return None
    return float(json.loads(path.read_text(encoding="utf-8"))["temperature"])


def save_temperature(model_dir: Path, record: dict[str, Any]) -> Path:
    """model/temperature.json ({'temperature': T, ...what it was fitted on}), written atomically."""
    from fmctl.checkpoint import atomic_write_text

    path = Path(model_dir) / TEMPERATURE_FILE
    atomic_write_text(path, json.dumps(record, indent=2))
    return path
