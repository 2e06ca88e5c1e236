"""Frozen backbones as feature extractors: what `fmctl probe` embeds data with.

A backbone family hands one out from `family.encoder(folder, modality, random_init,
seed)` (fmctl/backbones/base.py): an object with

- `modality`: "text" or "image", the labelled data it reads;
- `poolings`: the names of the vectors it gives per example, the default first
  (text: "mean" over real tokens, and "cls" for an encoder's first token or "last" for a
  decoder's last real token; images: "pooled", the model's own pooling before its head);
- `preprocessor`: the tokenizer, or the image preprocessing dict (size, normalisation);
- `model`: the torch module (moved to a device by the caller);
- `__call__(batch) -> {pooling: (batch, width) float tensor}`.

A tower of a two-tower model (CLIP's image or text tower) plugs in by giving the same
shape of object for the modality asked; nothing in the probe changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TextEncoder:
    """A transformers base model (AutoModel) read from a model folder: the weights under
    any task head (a fine-tuned classifier, a masked or causal LM) without that head."""

    modality = "text"

    def __init__(self, folder: Path, poolings: tuple[str, ...], random_init: bool = False, seed: int = 0):
        import torch
        import transformers

        from fmctl.models.text import _quiet_transformers, attention_kernel, has_tokenizer_files

        _quiet_transformers()
        folder = Path(folder)
        if not has_tokenizer_files(folder):
            from fmctl.errors import ModelError

            raise ModelError(f"{folder}: no tokenizer files next to the model; probe embeds text with the model's "
                             f"own tokenizer")
        self.poolings = poolings
        self.preprocessor = transformers.AutoTokenizer.from_pretrained(str(folder))
        if self.preprocessor.pad_token is None:
            self.preprocessor.pad_token = self.preprocessor.eos_token or self.preprocessor.unk_token
        config = transformers.AutoConfig.from_pretrained(str(folder))
        kernel = attention_kernel("auto")
        if random_init:
            torch.manual_seed(seed)
            self.model = transformers.AutoModel.from_config(config, attn_implementation=kernel)
        else:
            self.model = transformers.AutoModel.from_pretrained(str(folder), dtype=torch.float32,
                                                                attn_implementation=kernel)
        self.model.eval()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        mask = batch["attention_mask"]
        states = self.model(**{k: batch[k] for k in _TEXT_INPUTS if k in batch}).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(states.dtype)
        out = {"mean": (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)}
        if "cls" in self.poolings:
            out["cls"] = states[:, 0]
        if "last" in self.poolings:  # right padding: the last real token of each row
            last = (mask.sum(1) - 1).clamp(min=0)
            out["last"] = states[range(states.shape[0]), last]
        return out


class ImageEncoder:
    """A timm model read from a model folder (a fine-tuned classifier or a MIM encoder);
    its features are the pooled vector before the head (timm's pre_logits)."""

    modality = "image"
    poolings = ("pooled",)

    def __init__(self, folder: Path, random_init: bool = False, seed: int = 0):
        import json

        import timm
        import torch

        from fmctl.models import vision

        if random_init:
            config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
            torch.manual_seed(seed)
            self.model = timm.create_model(config["architecture"], pretrained=False, **config.get("model_args", {}))
            self.model.pretrained_cfg = {**self.model.pretrained_cfg, **config.get("pretrained_cfg", {})}
        else:
            self.model = vision.load_for_inference(Path(folder))
        self.preprocessor = vision.preprocessing(self.model)
        self.model.eval()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        features = self.model.forward_features(batch["pixel_values"])
        return {"pooled": self.model.forward_head(features, pre_logits=True).float()}
