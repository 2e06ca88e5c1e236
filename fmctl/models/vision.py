"""ViT backbones from timm, with a classification head.

model/ is written with timm's own `save_for_hf` (config.json + model.safetensors), so
`timm.create_model("local-dir:<run>/model", pretrained=True)` rebuilds it without fmctl.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.config.schema import VisionBackboneConfig
from fmctl.errors import ModelError
from fmctl.models import pretrained
from fmctl.models.sizes import shape_for

# The architecture whose constructor takes our size table's shapes as overrides.
_ARCH = "vit_base_patch16_224"
# A model built from scratch without backbone.image_size / patch_size.
FRESH_IMAGE_SIZE, FRESH_PATCH_SIZE = 32, 4


def build_vit_classifier(cfg: VisionBackboneConfig, num_classes: int) -> Any:
    import timm

    common = {"num_classes": num_classes, "drop_rate": cfg.dropout, "drop_path_rate": cfg.drop_path}
    if not cfg.pretrained:
        shape = shape_for(cfg.size, cfg.hidden_size, cfg.num_layers, cfg.num_heads)
        image_size, patch_size = cfg.image_size or FRESH_IMAGE_SIZE, cfg.patch_size or FRESH_PATCH_SIZE
        if image_size % patch_size:
            raise ModelError(f"backbone.patch_size: {patch_size} does not divide backbone.image_size {image_size}")
        model = timm.create_model(_ARCH, pretrained=False, img_size=image_size, patch_size=patch_size,
                                  embed_dim=shape.hidden_size, depth=shape.num_layers, num_heads=shape.num_heads,
                                  in_chans=cfg.in_chans, **common)
        return _describe_fresh(model, cfg.in_chans, image_size)
    where = pretrained.resolve(cfg.pretrained, weights=pretrained.TIMM_WEIGHTS)
    model = _load_pretrained(cfg, where, common)
    loaded_patch = model.patch_embed.patch_size[0]
    if cfg.patch_size is not None and cfg.patch_size != loaded_patch:
        raise ModelError(f"backbone.patch_size: {cfg.patch_size}, but the pretrained '{cfg.pretrained}' uses "
                         f"{loaded_patch}-pixel patches; leave backbone.patch_size unset (null) with backbone.pretrained")
    return _match_input_size(model)


def _match_input_size(model: Any) -> Any:
    """When img_size differs from the source checkpoint's, timm resamples the position
    embeddings but leaves pretrained_cfg describing the old size; make it say what the
    model now takes, keeping the source's normalisation."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is not None and tuple(model.pretrained_cfg["input_size"][-2:]) != tuple(size):
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (model.pretrained_cfg["input_size"][0], *size)}
    return model


def _load_pretrained(cfg: VisionBackboneConfig, where: Path | str, common: dict[str, Any]) -> Any:
    import timm

    try:
        if isinstance(where, Path) and where.is_dir() and (where / "config.json").is_file() and \
                "fmctl_head" in (where / "config.json").read_text(encoding="utf-8"):
            return _with_mlp_head(where, common)
        size = {"img_size": cfg.image_size} if cfg.image_size else {}
        if isinstance(where, Path) and where.is_dir():
            return timm.create_model(f"local-dir:{where}", pretrained=True, **size, **common)
        if isinstance(where, Path):
            if not cfg.arch:
                raise ModelError("backbone.arch: required with a single checkpoint file; name its timm "
                                 "architecture, e.g. backbone.arch=vit_small_patch16_224")
            shape = {k: v for k, v in (("embed_dim", cfg.hidden_size), ("depth", cfg.num_layers),
                                        ("num_heads", cfg.num_heads)) if v is not None}
            geometry = checkpoint_geometry(where)
            if cfg.patch_size is not None and geometry.get("patch_size", cfg.patch_size) != cfg.patch_size:
                raise ModelError(f"backbone.patch_size: {cfg.patch_size}, but '{where}' holds "
                                 f"{geometry['patch_size']}-pixel patch weights; leave it unset (null)")
            model = timm.create_model(cfg.arch, pretrained=True, pretrained_cfg_overlay={"file": str(where)},
                                      **{**geometry, **size, **shape}, **common)
            _require_every_weight(model, where, cfg.arch)
            return model
        return timm.create_model(f"hf-hub:{where}", pretrained=True, **size, **common)
    except ModelError:
        raise
    except Exception as exc:
        if isinstance(where, str):
            raise pretrained.hub_error(where, "backbone.pretrained", exc, saver=pretrained.TIMM_SAVER) from None
        raise ModelError(f"backbone.pretrained: cannot load '{where}' with timm "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def checkpoint_geometry(file: Path) -> dict[str, int]:
    """Patch and image size a ViT state-dict file was trained at, read from its tensor
    shapes. Why: timm builds `arch` at its default geometry (16-pixel patches, 224 px) and
    silently resamples a checkpoint that differs, so a 4-pixel-patch model would come back
    with interpolated patch kernels; building at the file's own geometry loads it as saved."""
    import math

    shapes = _tensor_shapes(file)
    kernel, positions = shapes.get("patch_embed.proj.weight"), shapes.get("pos_embed")
    if not kernel or len(kernel) != 4 or kernel[2] != kernel[3]:
        return {}
    geometry = {"patch_size": int(kernel[2]), "embed_dim": int(kernel[0])}
    blocks = {int(name.split(".")[1]) for name in shapes if name.startswith("blocks.") and name.split(".")[1].isdigit()}
    if blocks:
        geometry["depth"] = max(blocks) + 1
    if positions and len(positions) == 3:
        prefix = (1 if "cls_token" in shapes else 0) + (shapes["reg_token"][1] if "reg_token" in shapes else 0)
        for tokens in (positions[1] - prefix, positions[1]):  # some archs keep no prefix positions
            side = math.isqrt(tokens)
            if side * side == tokens:
                geometry["img_size"] = side * geometry["patch_size"]
                break
    return geometry


def _require_every_weight(model: Any, file: Path, arch: str) -> None:
    """timm loads a single file without insisting that it fills the model: blocks the file
    does not have (backbone.num_layers above the file's depth) would stay random silently."""
    held = {int(n.split(".")[1]) for n in _tensor_shapes(file) if n.startswith("blocks.") and n.split(".")[1].isdigit()}
    built = len(getattr(model, "blocks", []))
    if held and built > len(held):
        raise ModelError(f"backbone.pretrained: '{file}' holds {len(held)} blocks, backbone.arch={arch} was built with "
                         f"{built}; leave backbone.num_layers unset to take the file's depth")


def _tensor_shapes(file: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, without reading the weights where the format allows it."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
    import torch

    state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    return {name: list(value.shape) for name, value in state.items() if hasattr(value, "shape")} \
        if isinstance(state, dict) else {}


def _with_mlp_head(where: Path, common: dict[str, Any]) -> Any:
    """A run whose head `fmctl customize` replaced by an MLP: rebuilt with it when the
    class count still fits (the drop rates of this run applied)."""
    import json

    config = json.loads((where / "config.json").read_text(encoding="utf-8"))
    if config["fmctl_head"]["out_features"] != common["num_classes"]:
        raise ModelError(f"backbone.pretrained: '{where}' has an MLP head for {config['fmctl_head']['out_features']} "
                         f"classes, the data has {common['num_classes']}; start from its base run instead")
    model = load_for_inference(where)
    for module in model.modules():
        if type(module).__name__ == "DropPath" and hasattr(module, "drop_prob"):
            module.drop_prob = common["drop_path_rate"]
    return model


def preprocessing(model: Any) -> dict[str, Any]:
    """Input size and normalisation the model expects, from its timm pretrained_cfg."""
    return preprocessing_from_cfg(model.pretrained_cfg)


def preprocessing_from_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"image_size": int(cfg["input_size"][-1]), "in_chans": int(cfg["input_size"][0]),
            "mean": list(cfg.get("mean", (0.5, 0.5, 0.5))), "std": list(cfg.get("std", (0.5, 0.5, 0.5))),
            "crop_pct": float(cfg.get("crop_pct", 1.0)), "crop_mode": cfg.get("crop_mode") or "center",
            "interpolation": cfg.get("interpolation", "bilinear")}


def _describe_fresh(model: Any, in_chans: int, image_size: int) -> Any:
    """A from-scratch model's pretrained_cfg still describes vit_base's 224px ImageNet
    checkpoint; record what this model really takes (saved into model/config.json)."""
    model.pretrained_cfg = {**model.pretrained_cfg, "tag": "fmctl", "input_size": (in_chans, image_size, image_size),
                            "crop_pct": 1.0, "interpolation": "bilinear",
                            "mean": (0.5,) * in_chans, "std": (0.5,) * in_chans}
    return model


def save(model: Any, folder: Path, label_names: list[str]) -> None:
    from timm.models._hub import save_for_hf

    extra: dict[str, Any] = {"label_names": list(label_names)}
    if getattr(model, "fmctl_head", None):  # an MLP head written by `fmctl customize`
        extra["fmctl_head"] = model.fmctl_head
    save_for_hf(model, str(folder), safe_serialization=True, model_config=extra)


def load_for_inference(folder: Path) -> Any:
    import json

    import timm

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    if not config.get("fmctl_head"):
        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    from safetensors.torch import load_model

    from fmctl.customize.head import restore_head

    model = timm.create_model(config["architecture"], pretrained=False, **config.get("model_args", {}))
    model.pretrained_cfg = {**model.pretrained_cfg, **config.get("pretrained_cfg", {})}
    restore_head(model, config["fmctl_head"])
    load_model(model, str(Path(folder) / "model.safetensors"))
    return model
