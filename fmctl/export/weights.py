"""Weights for the ecosystem: a single safetensors file, or a save_pretrained-style folder.

Both are written from the model as `fmctl eval` loads it; once customizations (LoRA,
pruning) exist, they are folded into the weights before this point, so neither file
needs fmctl to load. The manifest's `architecture` says how to rebuild the model around
the weights-only file (a transformers config or timm's architecture and arguments).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def architecture(model_dir: Path, auto_class: str = "AutoModelForSequenceClassification") -> dict[str, Any]:
    """What a user needs to rebuild the module that the weights-only file fills."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if "architecture" in config and "model_args" in config:  # timm's save_for_hf layout
        # The overlay must carry num_classes: without it timm drops the trained head,
        # because the architecture's default checkpoint has a different class count.
        overlay = {**config.get("pretrained_cfg", {}), "num_classes": config["model_args"].get("num_classes")}
        arch = {"library": "timm", "architecture": config["architecture"], "model_args": config["model_args"],
                "pretrained_cfg_overlay": overlay,
                "load": "timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay="
                        "{**pretrained_cfg_overlay, 'file': 'model.safetensors'}, **model_args)"}
    else:
        arch = {"library": "transformers", "config": config, "auto_class": auto_class,
                "load": f"{auto_class}.from_config(AutoConfig.for_model(**config)); "
                        "model.load_state_dict(safetensors.torch.load_file('model.safetensors'))"}
    if config.get("fmctl_head"):  # an MLP head from `fmctl customize`: not an architecture the libraries know
        arch["head"] = config["fmctl_head"]
        arch["load"] = ("the model as above, then fmctl.customize.head.restore_head(model, head) before "
                        "loading the weights (the head is an MLP of torch.nn layers described by 'head')")
    return arch


def save_safetensors(model: Any, path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    from safetensors.torch import save_model

    save_model(model, str(path), metadata=metadata)
    return {"tensors": len(model.state_dict())}


def rebuild_from_safetensors(arch: dict[str, Any], path: Path) -> Any:
    """Rebuild the model exactly as the manifest tells a user to (used by the parity check)."""
    if arch["library"] == "timm":
        import timm

        if arch.get("head"):
            from safetensors.torch import load_model

            from fmctl.customize.head import restore_head

            model = restore_head(timm.create_model(arch["architecture"], pretrained=False, **arch["model_args"]),
                                 arch["head"])
            load_model(model, str(path))
            return model.eval()
        overlay = {**arch["pretrained_cfg_overlay"], "file": str(path)}
        return timm.create_model(arch["architecture"], pretrained=True, pretrained_cfg_overlay=overlay,
                                 **arch["model_args"]).eval()
    import transformers
    from safetensors.torch import load_model

    config = dict(arch["config"])
    auto = getattr(transformers, arch.get("auto_class", "AutoModelForSequenceClassification"))
    model = auto.from_config(transformers.AutoConfig.for_model(**config))
    if arch.get("head"):
        from fmctl.customize.head import restore_head

        restore_head(model, arch["head"])
    load_model(model, str(path))
    return model.eval()
