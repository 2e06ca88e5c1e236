"""Backbone families: one module each, registered here by name in an explicit table.

`family("bert")` imports fmctl.backbones.bert on first use and returns its family object;
importing this package imports no family module and no torch, transformers or timm (the
CLI's start-up stays light). A test or a plug-in adds a family with `register(...)`
without editing this table.

Everything that used to keep a per-family table or guess a model's layout asks
`structure_of(model, name)`: the model's block stacks, head, LoRA targets, dropout sites,
head layout, depth keys and weight-decay exemptions (see fmctl.backbones.structure).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmctl._suggest import did_you_mean
from fmctl.errors import ConfigError

if TYPE_CHECKING:
    from fmctl.backbones.base import BackboneFamily
    from fmctl.backbones.structure import Structure
    from fmctl.backbones.composed import Towers

# Shipped families: name -> module holding its `FAMILY` object.
FAMILIES = {
    "bert": "fmctl.backbones.bert",
    "gpt": "fmctl.backbones.gpt",
    "t5": "fmctl.backbones.t5",
    "vit": "fmctl.backbones.vit",
    "clip": "fmctl.backbones.clip",
    "cvt": "fmctl.backbones.cvt",
    "encoder_decoder": "fmctl.backbones.encoder_decoder",
}
_registered: dict[str, BackboneFamily] = {}
_loaded: dict[str, BackboneFamily] = {}


def names() -> list[str]:
    """Every family name: the shipped ones, then the registered ones."""
    return [*FAMILIES, *(n for n in _registered if n not in FAMILIES)]


def family(name: str) -> BackboneFamily:
    """The family called `name`; an unknown name is a ConfigError with the closest one."""
    if name in _registered:
        return _registered[name]
    if name not in FAMILIES:
        known = names()
        raise ConfigError(f"backbone.name: unknown backbone '{name}'{did_you_mean(name, known)}; "
                          f"available: {', '.join(known)}")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(FAMILIES[name]).FAMILY
    return _loaded[name]


def declaring(attribute: str) -> str:
    """'bert, gpt and vit': the families that declare `attribute` (head_layout,
    ffn_layout, ...), for messages that say which backbones an operation supports."""
    found = [n for n in names() if getattr(family(n), attribute, None) is not None]
    return ", ".join(found[:-1]) + " and " + found[-1] if len(found) > 1 else "".join(found)


def register(new: BackboneFamily, replace: bool = False) -> BackboneFamily:
    """Add a family (a test's two-tower model, a plug-in) under `new.name`. A shipped name,
    or one registered before, is refused unless `replace`."""
    if not replace and (new.name in FAMILIES or new.name in _registered):
        raise ValueError(f"a backbone family named '{new.name}' exists; pass replace=True to replace it")
    _registered[new.name] = new
    return new


def unregister(name: str) -> None:
    """Remove a family added with `register` (shipped families stay)."""
    _registered.pop(name, None)


def of_folder(folder: Path) -> BackboneFamily:
    """The family that saved a model/ folder, from its config.json. A transformers model
    of a type no family lists (a new encoder, say) is loaded with transformers' Auto
    classes as every text family loads, so it is read as the first text family."""
    import json

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    for name in names():
        if family(name).owns(config):
            return family(name)
    if config.get("model_type"):
        return next(family(n) for n in names() if "text" in family(n).modalities)
    raise ConfigError(f"{folder}: config.json is neither a transformers nor a timm model's; no backbone family "
                      f"loads it ({', '.join(names())})")


def structure_of(model: Any, name: str) -> Structure | Towers:
    """The declared structure of `model`, read by the family called `name`; a model that
    says it is composed of towers (`fmctl_towers`: tower -> (family, module path), as
    fmctl's segmentation model holds its encoder) is read tower by tower."""
    from fmctl.backbones._locate import unwrap
    from fmctl.backbones.composed import towers as compose

    composed = getattr(unwrap(model)[0], "fmctl_towers", None)
    if composed:
        return compose(model, dict(composed), family=name)
    return family(name).structure(model)


def towers(model: Any, parts: dict[str, tuple[str, str]], family: str = "towers",
           head_attrs: tuple[str, ...] = ()) -> Towers:
    """The structure of a model composed of named towers; see fmctl.backbones.composed."""
    from fmctl.backbones.composed import towers as compose

    return compose(model, parts, family=family, head_attrs=head_attrs)
