"""What a two-tower model's export needs beyond its two graphs: the other modality's
reference embeddings its parity check searches (fmctl.export.measures.NearestOfOther),
and the post-processing a deployment applies to the embeddings (temperature, templates)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Validation pairs whose PyTorch embeddings an encoder's export is searched against.
REFERENCE_PAIRS = 2048


def reference_embeddings(model: Any, data: Any, modality: str, input_names: dict[str, list[str]],
                         batch_size: int = 64) -> tuple[Any, Any]:
    """(normalised PyTorch embeddings of `modality` for the validation pairs, their caption
    ids), in fp32 on the CPU, as the export's reference module computes them."""
    import numpy as np
    import torch

    dataset = data.validation
    count = min(len(dataset), REFERENCE_PAIRS)
    names = input_names["image_encoder" if modality == "image" else "text_encoder"]
    rows, ids = [], []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            batch = data.collate([dataset[i] for i in range(start, min(count, start + batch_size))])
            if modality == "image":
                rows.append(model.encode_image(batch["pixel_values"]).float().numpy())
            else:
                named = {n: batch[n] for n in names}
                rows.append(model.encode_text(named["input_ids"], named["attention_mask"],
                                              named.get("token_type_ids")).float().numpy())
            ids.append(batch["labels"].numpy())
    return np.concatenate(rows), np.concatenate(ids)


def postprocessing(cfg: Any, model_dir: Path) -> dict[str, Any]:
    """The export manifest's postprocessing (and what predict decodes a run folder with):
    the embeddings are L2-normalised, cosine is their dot product; zero-shot takes a
    softmax over logit_scale x cosine (+ logit_bias for the sigmoid loss) to class
    embeddings averaged over the templates."""
    from safetensors.numpy import load_file

    config_path = Path(model_dir) / "config.json"
    import json

    config = json.loads(config_path.read_text(encoding="utf-8"))
    own = load_file(str(Path(model_dir) / config["projections"]))
    scale = min(math.exp(float(own["logit_scale"])), float(config["logit_scale_max"]))
    out = {"kind": "two_tower", "outputs": {"image_encoder": "image_embeds", "text_encoder": "text_embeds"},
           "normalised": True, "logit_scale": scale, "templates": list(cfg.templates), "loss": cfg.loss,
           "zero_shot": "softmax over logit_scale x cosine with each class's prompt embeddings (the mean over the "
                        "templates, normalised)"}
    if "logit_bias" in own:
        out["logit_bias"] = float(own["logit_bias"])
    return out
