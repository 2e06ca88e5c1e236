"""CLIP: an image tower from a vision family and a text tower from a text family, composed.

Nothing here builds, loads or saves a tower itself: `backbone.image` and `backbone.text`
are configs of shipped families (vit; bert or gpt), and those families build them
(random, a local folder, `pkg:`, or an earlier fmctl run), load them and save them in
their libraries' layouts. This family adds the pair's own parts (fmctl.models.two_tower)
and model/'s layout:

    model/config.json              which family and folder each tower is, embed_dim, pooling
    model/image/                   the image tower as its family saves it (timm save_for_hf)
    model/text/                    the text tower and its tokenizer (save_pretrained)
    model/projections.safetensors  image_projection.weight, text_projection.weight, logit_scale[, logit_bias]
    model/README.md                how to combine them without fmctl
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from fmctl.backbones.base import BackboneFamily
from fmctl.backbones.composed import keyed
from fmctl.config.schema import ClipBackboneConfig
from fmctl.errors import ModelError

MARKER = "fmctl_two_tower"
PROJECTIONS = "projections.safetensors"
TOWERS = ("image", "text")


class Clip(BackboneFamily):
    name = "clip"
    config = ClipBackboneConfig
    modalities = ("image", "text")
    kind = "a two-tower image-text model"

    # ---- facts and checks --------------------------------------------------------------
    def describe(self, cfg: Any) -> str:
        if cfg.pretrained:
            return cfg.pretrained
        from fmctl.backbones import family

        return "; ".join(f"{tower} {getattr(cfg, tower).name}: {family(getattr(cfg, tower).name).describe(getattr(cfg, tower))}"
                         for tower in TOWERS)

    def checks(self, run: Any) -> list[str]:
        """Each tower names a family that can be one; a clip run brings both towers."""
        from fmctl import backbones

        cfg = run.backbone
        problems = []
        known = backbones.names()
        images = [n for n in known if backbones.family(n).image_tower]
        texts = [n for n in known if backbones.family(n).sequence_pooling is not None]
        for tower, allowed in (("image", images), ("text", texts)):
            name = getattr(cfg, tower).name
            if name not in allowed:
                problems.append(f"backbone.{tower}.name: '{name}' cannot be the {tower} tower; "
                                f"use {' or '.join(allowed)}")
            if cfg.pretrained and getattr(cfg, tower).pretrained:
                problems.append(f"backbone.{tower}.pretrained: not used with backbone.pretrained (the clip run "
                                f"'{cfg.pretrained}' brings both towers); set one of them")
        return problems

    # ---- life cycle ----------------------------------------------------------------------
    def build(self, cfg: Any, head: str = "contrastive", preprocessor: Any = None, **options: Any) -> Any:
        """The pair, from an earlier clip run or from the towers' configs. `preprocessor`
        holds the text tokenizer ({"text": tokenizer}); `logit_bias_init` (a number, or
        None for no bias) is the sigmoid loss's learnable bias."""
        from fmctl.backbones import family
        from fmctl.models.two_tower import TwoTowerModel

        bias = options.get("logit_bias_init")
        if cfg.pretrained:
            model, _ = self.load(_clip_folder(cfg.pretrained, "backbone.pretrained"))
            return _with_bias(model, bias)
        image_cfg, text_cfg = tower_configs(cfg)
        tokenizer = (preprocessor or {}).get("text")
        if tokenizer is None:
            raise ValueError("the clip family builds its text tower with the tokenizer: pass {'text': tokenizer}")
        image_tower = keyed("image", lambda: family(image_cfg.name).build(image_cfg, "pretraining"))
        text_tower = keyed("text", lambda: family(text_cfg.name).build(text_cfg, "features", tokenizer))
        return TwoTowerModel(image_tower, text_tower, image_family=image_cfg.name, text_family=text_cfg.name,
                             embed_dim=cfg.embed_dim, text_pooling=pooling(cfg.text_pooling, text_cfg.name),
                             logit_scale_init=cfg.logit_scale_init, logit_scale_max=cfg.logit_scale_max,
                             logit_bias_init=bias)

    def load(self, folder: Path, head: str = "contrastive") -> tuple[Any, Any]:
        """(model, {"image": preprocessing, "text": tokenizer}) from a model/ folder."""
        from fmctl.backbones import family
        from fmctl.models.two_tower import TwoTowerModel

        folder = Path(folder)
        config = _saved_config(folder)
        image_tower, image_prep = family(config["image"]["family"]).load(folder / config["image"]["folder"],
                                                                         "pretraining")
        text_tower, tokenizer = family(config["text"]["family"]).load(folder / config["text"]["folder"], "features")
        tensors = _projections(folder, image_tower.num_features, text_tower.config.hidden_size)
        model = TwoTowerModel(image_tower, text_tower, image_family=config["image"]["family"],
                              text_family=config["text"]["family"], embed_dim=tensors["image_projection.weight"].shape[0],
                              text_pooling=config["text"]["pooling"], logit_scale_max=config["logit_scale_max"],
                              logit_bias_init=0.0 if "logit_bias" in tensors else None)
        own = {name: value for name, value in model.state_dict().items() if not name.startswith(("image_tower.",
                                                                                                   "text_tower."))}
        model.load_state_dict({**model.state_dict(), **{k: tensors[k] for k in own}})
        return model, {"image": image_prep, "text": tokenizer}

    def encoder(self, folder: Path, modality: str, random_init: bool = False, seed: int = 0) -> Any:
        """One tower of a saved pair as its own family probes it: the tower's features before
        the projection, as CLIP's linear probes read them (`fmctl probe CLIP_RUN tower=image`)."""
        from fmctl.backbones import family

        config = _saved_config(Path(folder))
        tower = config[modality]
        return family(tower["family"]).encoder(Path(folder) / tower["folder"], modality, random_init, seed)

    def save(self, model: Any, folder: Path, preprocessor: Any = None, label_names: Sequence[str] = ()) -> None:
        from safetensors.torch import save_file

        from fmctl.backbones import family

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        family(model.image_family).save(model.image_tower, folder / "image")
        family(model.text_family).save(model.text_tower, folder / "text", (preprocessor or {}).get("text"))
        own = {"image_projection.weight": model.image_projection.weight, "text_projection.weight":
               model.text_projection.weight, "logit_scale": model.logit_scale}
        if model.logit_bias is not None:
            own["logit_bias"] = model.logit_bias
        save_file({k: v.detach().float().contiguous().cpu() for k, v in own.items()}, str(folder / PROJECTIONS))
        config = {MARKER: 1, "embed_dim": model.embed_dim, "logit_scale_max": model.logit_scale_max,
                  "image": {"family": model.image_family, "folder": "image", "features": model.image_tower.num_features},
                  "text": {"family": model.text_family, "folder": "text", "pooling": model.text_pooling,
                           "features": model.text_tower.config.hidden_size},
                  "projections": PROJECTIONS, "label_names": []}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        from fmctl.backbones.clip_readme import write_readme

        write_readme(folder, config)

    def preprocessor(self, cfg: Any, *, model: Any = None, folder: Path | None = None,
                     training_texts: Callable[[], Iterable[str]] | None = None, split_words: bool = False) -> Any:
        """{"image": ..., "text": ...} as far as they are known: both from a model/ folder
        or an earlier clip run; the image preprocessing from a built model; the tokenizer
        from the text tower's config (trained on `training_texts` when it names none)."""
        from fmctl.backbones import family

        if folder is None and model is None and cfg.pretrained:
            folder = _clip_folder(cfg.pretrained, "backbone.pretrained")
        if folder is not None:
            config = _saved_config(Path(folder))
            image = family(config["image"]["family"]).preprocessor(None, folder=Path(folder) / config["image"]["folder"])
            text = family(config["text"]["family"]).preprocessor(None, folder=Path(folder) / config["text"]["folder"])
            return {"image": image, "text": text}
        if model is not None:
            return {"image": family(model.image_family).preprocessor(None, model=model.image_tower)}
        _, text_cfg = tower_configs(cfg)
        return {"text": keyed("text", lambda: family(text_cfg.name).preprocessor(text_cfg,
                                                                                 training_texts=training_texts))}

    # ---- structure ---------------------------------------------------------------------
    def structure(self, model: Any) -> Any:
        from fmctl.backbones import towers  # the function (fmctl.backbones.composed holds it)
        from fmctl.backbones._locate import unwrap

        inner, _ = unwrap(model)
        return towers(model, {"image": (inner.image_family, "image_tower"), "text": (inner.text_family, "text_tower")},
                      family=self.name)

    def position_table(self, model: Any) -> int | None:
        """The text tower's (its family's rule, RoBERTa's offset included)."""
        from fmctl.backbones import family
        from fmctl.backbones._locate import unwrap

        inner, _ = unwrap(model)
        return family(inner.text_family).position_table(inner.text_tower)

    def owns(self, config: Any) -> bool:
        return MARKER in config


def pooling(chosen: str, text_family: str) -> str:
    """backbone.text_pooling, with auto resolved by the text family (mean / last)."""
    from fmctl.backbones import family

    return family(text_family).sequence_pooling if chosen == "auto" else chosen


def tower_configs(cfg: Any) -> tuple[Any, Any]:
    """backbone.image and backbone.text, with a tower's `pretrained` that names a clip run
    (or its model/) pointed at that run's tower folder."""
    return tuple(dataclasses.replace(getattr(cfg, t), pretrained=_tower_source(getattr(cfg, t).pretrained, t))
                 for t in TOWERS)


def _tower_source(spec: str | None, tower: str) -> str | None:
    if not spec or spec.startswith("pkg:"):
        return spec
    path = Path(spec).expanduser()
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file() and MARKER in _read_json(candidate / "config.json"):
            return str(candidate / _read_json(candidate / "config.json")[tower]["folder"])
    return spec


def _clip_folder(spec: str, key: str) -> Path:
    from fmctl.models import pretrained

    where = pretrained.resolve(spec, key, weights=())
    if not isinstance(where, Path) or not (where / "config.json").is_file() or \
            MARKER not in _read_json(where / "config.json"):
        raise ModelError(f"{key}: '{spec}' is not a clip model (an fmctl contrastive run or its model/); "
                         f"point backbone.image.pretrained / backbone.text.pretrained at single towers")
    return where


def _saved_config(folder: Path) -> dict[str, Any]:
    config = _read_json(folder / "config.json")
    if MARKER not in config:
        raise ModelError(f"{folder}: config.json is not a clip model's")
    return config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _projections(folder: Path, image_features: int, text_features: int) -> dict[str, Any]:
    """projections.safetensors, checked against the towers it joins: each projection must
    read its tower's width and both must write the same embedding size."""
    from safetensors.torch import load_file

    path = folder / PROJECTIONS
    if not path.is_file():
        raise ModelError(f"{path}: missing; a clip model/ keeps its projections and temperature there")
    tensors = load_file(str(path))
    missing = [k for k in ("image_projection.weight", "text_projection.weight", "logit_scale") if k not in tensors]
    if missing:
        raise ModelError(f"{path}: no {', '.join(missing)}")
    image, text = tuple(tensors["image_projection.weight"].shape), tuple(tensors["text_projection.weight"].shape)
    if image[0] != text[0]:
        raise ModelError(f"{path}: the projections disagree in size: image_projection gives {image[0]} dimensions, "
                         f"text_projection {text[0]}; both towers must project to one embed_dim")
    for tower, shape, width in (("image", image, image_features), ("text", text, text_features)):
        if shape[1] != width:
            raise ModelError(f"{path}: {tower}_projection reads {shape[1]} features but the {tower} tower in "
                             f"{folder / tower} gives {width}; the tower and projections come from different runs")
    return tensors


def _with_bias(model: Any, bias: float | None) -> Any:
    """A clip run continued with the other loss: the sigmoid loss's bias added (at its
    initial value) or dropped, so no parameter goes without a gradient."""
    import torch

    if bias is None:
        model.logit_bias = None
    elif model.logit_bias is None:
        model.logit_bias = torch.nn.Parameter(torch.tensor(float(bias)))
    return model


FAMILY = Clip()
