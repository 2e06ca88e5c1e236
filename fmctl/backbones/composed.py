"""A model made of named towers (CLIP-like: an image tower and a text tower), each one a
shipped family, plus the composed model's own parameters (projections, logit scale).

The composed structure answers the same questions as one family's `Structure`, tower by
tower: its layer groups are each tower's groups named by the tower (`image.embeddings`,
`image.blocks.3`, `text.blocks.0`, ...) and then the composed model's own parameters as
`head`, last; LoRA targets, attention-dropout sites and the names exempt from weight decay
are the towers' unions; pruning and FSDP go through every tower's stacks. Consumers
split the groups with `structure.by_tower`, so "the bottom block" or "the top of the
network" mean each tower's own.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fmctl.backbones.structure import FfnLayout, HeadLayout, HeadRemoval, Structure


@dataclass(frozen=True)
class Towers:
    family: str
    # Tower name -> its structure, with paths and names as seen from the composed model.
    towers: Mapping[str, Structure]
    # Tower name -> module path of the tower in the composed model.
    paths: Mapping[str, str]
    root: str = ""
    # Attributes of the composed model that may hold a linear task head.
    head_attrs: tuple[str, ...] = ()
    no_decay: frozenset[str] = frozenset()
    # No single config counts the blocks of two towers: drop_layers refuses towers.
    depth_keys: tuple[str, ...] = field(default=(), init=False)

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(s for t in self.towers.values() for s in t.stacks)

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return _union(t.lora_targets for t in self.towers.values())

    @property
    def fan_in_fan_out(self) -> bool:
        """peft takes one flag; it corrects it per layer (with a warning) where a tower's
        weights are stored the other way round."""
        return any(t.fan_in_fan_out for t in self.towers.values())

    @property
    def attention_dropout(self) -> tuple[str, ...]:
        return _union(t.attention_dropout for t in self.towers.values())

    def tower_of(self, name: str) -> str | None:
        for tower, path in self.paths.items():
            if name.startswith(path + "."):
                return tower
        return None

    def is_head(self, name: str) -> bool:
        """The composed model's own parameters are its head; a tower's own head markers
        (a pooler, an fc_norm) name that tower's `head` group, not this one."""
        return self.tower_of(name) is None

    def groups(self, model: Any, names: Iterable[str] | None = None) -> dict[str, list[str]]:
        all_names = [n for n, _ in model.named_parameters()] if names is None else list(names)
        groups: dict[str, list[str]] = {}
        for tower, structure in self.towers.items():
            mine = [n for n in all_names if n.startswith(self.paths[tower] + ".")]
            for group, members in structure.groups(model, mine).items():
                if members:
                    groups[f"{tower}.{group}"] = members
        own = [n for n in all_names if self.tower_of(n) is None]
        if own:
            groups["head"] = own
        return groups

    def head_modules(self, names: Iterable[str]) -> list[str]:
        """Each tower's head modules, and the composed model's own top-level modules (its
        bare parameters, such as a logit scale, cannot be peft modules_to_save)."""
        names = list(names)
        found: list[str] = []
        for tower, structure in self.towers.items():
            found += structure.head_modules(n for n in names if self.tower_of(n) == tower)
        for name in names:
            if self.tower_of(name) is None and "." in name[len(self.root):]:
                module = self.root + name[len(self.root):].split(".", 1)[0]
                if module not in found:
                    found.append(module)
        return found

    def head_stacks(self) -> list[tuple[str, HeadLayout | None]]:
        return [pair for t in self.towers.values() for pair in t.head_stacks()]

    def ffn_stacks(self) -> list[tuple[str, FfnLayout | None, str]]:
        """Every tower's stacks, each with the config of its own tower."""
        return [entry for t in self.towers.values() for entry in t.ffn_stacks()]

    def removal_stacks(self) -> list[tuple[str, HeadRemoval | None, str]]:
        """Every tower's stacks, each with the config of its own tower."""
        return [entry for t in self.towers.values() for entry in t.removal_stacks()]

    def config_sites(self) -> list[tuple[str, Mapping[str, tuple[str, ...]]]]:
        return [site for t in self.towers.values() for site in t.config_sites()]


def towers(model: Any, parts: Mapping[str, tuple[str, str]], family: str = "towers",
           head_attrs: tuple[str, ...] = ()) -> Towers:
    """The structure of a composed model: `parts` maps a tower name to (family name,
    module path of the tower inside the model), e.g. {"image": ("vit", "image_tower"),
    "text": ("bert", "text_tower")}. Each tower is read by its own family; wrappers around
    the composed model (peft, DDP, torch.compile) are looked through."""
    from fmctl.backbones import family as family_named
    from fmctl.backbones._locate import unwrap

    inner, root = unwrap(model)
    structures: dict[str, Structure] = {}
    paths: dict[str, str] = {}
    for tower, (name, path) in parts.items():
        if "." in tower or tower in ("embeddings", "final_norm", "head", "blocks"):
            raise ValueError(f"tower name '{tower}' would be read as a layer group; name it otherwise")
        read = family_named(name).structure(inner.get_submodule(path))
        if not isinstance(read, Structure):
            raise ValueError(f"tower '{tower}': family '{name}' is itself made of towers")
        structures[tower] = read.under(root + path)
        paths[tower] = root + path
    exempt = set()
    declared = set(inner.no_weight_decay()) if hasattr(inner, "no_weight_decay") else set()
    for name, param in model.named_parameters():
        if not any(name.startswith(p + ".") for p in paths.values()):
            if param.ndim <= 1 or name[len(root):] in declared or name.split(".")[-1] in declared:
                exempt.add(name)
    for structure in structures.values():
        exempt |= structure.no_decay
    return Towers(family=family, towers=structures, paths=paths, root=root, head_attrs=head_attrs,
                  no_decay=frozenset(exempt))


def _union(groups: Iterable[Iterable[str]]) -> tuple[str, ...]:
    out: list[str] = []
    for items in groups:
        out += [i for i in items if i not in out]
    return tuple(out)


def keyed(part: str, make: Any) -> Any:
    """Run a tower family's builder; its messages name backbone.<key>, which for a tower
    (or an encoder-decoder's half) is backbone.<part>.<key>."""
    from fmctl.errors import ConfigError, ModelError

    try:
        return make()
    except (ModelError, ConfigError) as exc:
        text = str(exc)
        if text.startswith("backbone.") and not text.startswith(f"backbone.{part}."):
            raise type(exc)(f"backbone.{part}." + text[len("backbone."):]) from None
        raise
