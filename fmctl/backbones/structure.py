"""A model's declared structure, and the named layer groups derived from it.

A `Structure` is what a backbone family reads off one model instance: the dotted paths of
its transformer block stacks (in depth order), the prefix of framework wrappers around it
(peft, DDP, torch.compile), the names exempt from weight decay, plus the family's static
declarations copied in (head markers, LoRA targets, dropout sites, head and feed-forward
layouts, depth keys). Freezing, LoRA, layer-wise learning rates, pruning, drop_layers and
FSDP ask it instead of guessing, so a new family is one declaration.

Layer groups are `embeddings`, `blocks.<i>` (numbered across the stacks in depth order:
T5's encoder blocks, then its decoder blocks), `final_norm` and `head`: every parameter
exactly once, in the model's own order, the head last. A parameter before the first block
that is not part of the head is an embedding; one after it is part of `final_norm`. A
staged model (CvT) also names the module of each stage: a later stage's own parameters
outside its blocks (the convolution that downsamples into it, a class token) belong to the
stage's first block, as timm's group matchers put a downsampling layer with its stage.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fmctl.backbones.base import BackboneFamily

# Group names of one family's model; a tower's groups carry its name in front ("image.").
LOCAL_GROUPS = ("embeddings", "final_norm", "head")


@dataclass(frozen=True)
class HeadLayout:
    """Where a block keeps its attention heads, for removing heads by importance.

    `projections` are (attribute path from a block, axis of the head slices, offsets of the
    q/k/v parts in units of the hidden size); the last one is the projection after
    attention, sliced on its input. `count` is the attribute path of the number of heads."""

    count: str
    projections: tuple[tuple[str, int, tuple[int, ...]], ...]


@dataclass(frozen=True)
class HeadRemoval:
    """Where a family's saved config records the head count apart from the head width, so
    attention heads can be removed rather than zeroed (T5's num_heads and d_kv; BERT, GPT-2
    and timm's ViT derive the width from hidden size / heads and have no such key).

    `sites` are (attribute path from a block, shared): the attention modules of a block
    (a path a block lacks is skipped: T5's encoder blocks have no cross-attention).
    `shared` sites keep the same heads in every block of a stack, because a table the
    stack's first block computes is reused by the others (T5's relative position bias).
    Inside an attention module, `inputs` are the projections whose outputs are grouped by
    head, `output` the one that reads them back, `tables` per-head embeddings (one column
    per head), `count_attr` / `inner_attr` the attributes holding the head count and the
    total width; `count_key` is the config key of the head count."""

    count_key: str
    sites: tuple[tuple[str, bool], ...]
    inputs: tuple[str, ...]
    output: str
    count_attr: str
    inner_attr: str
    tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class FfnLayout:
    """Where a block keeps its feed-forward channels, for removing them by importance.

    `expand` is the attribute path (from a block) of the layer whose outputs are the
    channels, `reduce` the layer that reads them back; either may be a linear layer or
    GPT-2's Conv1D. `width_key` is where the saved config records the channel count, so
    the library rebuilds the smaller model on its own: a transformers config key
    (intermediate_size, n_inner) or a timm model argument; with `ratio`, the key holds the
    count divided by the hidden size (timm's mlp_ratio)."""

    expand: str
    reduce: str
    width_key: str
    ratio: bool = False


@dataclass(frozen=True)
class Structure:
    family: str
    # Dotted module paths (in the model the structure was read from) of the block stacks.
    stacks: tuple[str, ...] = ()
    # Prefix of framework wrappers in front of the family's own parameter names.
    root: str = ""
    head_markers: tuple[str, ...] = ()
    head_attrs: tuple[str, ...] = ()
    lora_targets: tuple[str, ...] = ()
    fan_in_fan_out: bool = False
    attention_dropout: tuple[str, ...] = ()
    dropout_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    head_layout: HeadLayout | None = None
    head_removal: HeadRemoval | None = None
    ffn_layout: FfnLayout | None = None
    depth_keys: tuple[str, ...] = ()
    no_decay: frozenset[str] = frozenset()
    # Module path whose `.config` holds the family's config keys ("" = the model given).
    config_at: str = ""
    # A staged model's stage modules, one per stack ("" where a stack has none): what a
    # stage holds outside its stack joins the stage's first block (the first stage's own
    # embedding stays `embeddings`).
    stages: tuple[str, ...] = ()

    def is_head(self, name: str) -> bool:
        """Whether parameter `name` belongs to the task head (a marker among the first two
        name parts below the wrappers)."""
        parts = name[len(self.root):].split(".") if name.startswith(self.root) else name.split(".")
        for marker in self.head_markers:
            stem = marker.rstrip(".")
            if any(p == stem or (not marker.endswith(".") and p.startswith(stem)) for p in parts[:2]):
                return True
        return False

    def groups(self, model: Any, names: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Group name -> parameter names (of `names`, default all of the model's)."""
        offsets, start = {}, 0
        for stack in self.stacks:
            offsets[stack] = start
            start += len(model.get_submodule(stack))
        groups: dict[str, list[str]] = {"embeddings": []}
        seen: set[str] = set()  # stacks with a block met so far
        tail: list[str] = []
        staged = {stage + ".": stack for stage, stack in zip(self.stages, self.stacks) if stage}
        for name in (n for n, _ in model.named_parameters()) if names is None else names:
            stack = next((s for s in self.stacks if name.startswith(s + ".")), None)
            stage_stack = next((staged[p] for p in staged if name.startswith(p)), None)
            if stack is not None:
                index = offsets[stack] + int(name[len(stack) + 1:].split(".", 1)[0])
                groups.setdefault(f"blocks.{index}", []).append(name)
                seen.add(stack)
            elif stage_stack is not None and offsets[stage_stack] > 0 and len(model.get_submodule(stage_stack)):
                groups.setdefault(f"blocks.{offsets[stage_stack]}", []).append(name)
            elif self.is_head(name):
                groups.setdefault("head", []).append(name)
            elif not self._above_blocks(name, seen):
                groups["embeddings"].append(name)
            else:
                tail.append(name)
        if tail:
            groups["final_norm"] = tail
        if "head" in groups:
            groups["head"] = groups.pop("head")  # keep the head last
        return groups

    def _above_blocks(self, name: str, seen: set[str]) -> bool:
        """Whether a parameter outside the blocks comes after them: after the blocks of the
        stack whose parent module holds it (a decoder's own position table sits below the
        decoder's blocks even though the encoder's came first), else after any block."""
        owner = max((s for s in self.stacks if name.startswith(_parent(s))), key=len, default=None)
        return owner in seen if owner is not None else bool(seen)

    def head_modules(self, names: Iterable[str]) -> list[str]:
        """Module paths holding the head parameters among `names` (for peft's
        modules_to_save): the name up to its first head-marker part."""
        stems = [m.rstrip(".") for m in self.head_markers]
        found: list[str] = []
        for name in names:
            inner = name[len(self.root):] if name.startswith(self.root) else name
            parts = inner.split(".")
            for i, part in enumerate(parts[:2]):
                if any(part == s or part.startswith(s) for s in stems):
                    module = self.root + ".".join(parts[:i + 1])
                    if module not in found:
                        found.append(module)
                    break
        return found

    def head_stacks(self) -> list[tuple[str, HeadLayout | None]]:
        """(stack path, the family's head layout) for every stack, for head pruning."""
        return [(stack, self.head_layout) for stack in self.stacks]

    def ffn_stacks(self) -> list[tuple[str, FfnLayout | None, str]]:
        """(stack path, the family's feed-forward layout, module path whose config records
        the width) for every stack, for feed-forward channel removal."""
        return [(stack, self.ffn_layout, self.config_at) for stack in self.stacks]

    def removal_stacks(self) -> list[tuple[str, HeadRemoval | None, str]]:
        """(stack path, the family's head-removal declaration, module path whose config
        records the head count) for every stack, for structural head removal."""
        return [(stack, self.head_removal, self.config_at) for stack in self.stacks]

    def config_sites(self) -> list[tuple[str, Mapping[str, tuple[str, ...]]]]:
        """(module path whose config to edit, its dropout keys)."""
        return [(self.config_at, self.dropout_keys)]

    def under(self, path: str) -> Structure:
        """This structure, read from the submodule at `path`, as seen from the model
        holding it: every path and name gets `path.` in front."""
        prefix = path + "."
        return replace(self, stacks=tuple(prefix + s for s in self.stacks), root=prefix + self.root,
                       stages=tuple(prefix + s if s else "" for s in self.stages),
                       no_decay=frozenset(prefix + n for n in self.no_decay),
                       config_at=path + ("." + self.config_at if self.config_at else ""))


def _parent(stack: str) -> str:
    """'encoder.' for 'encoder.block'; '' for a top-level stack."""
    parent = stack.rpartition(".")[0]
    return parent + "." if parent else ""


def declared(family: BackboneFamily, model: Any, stacks: Iterable[str], root: str,
             stages: Iterable[str] = ()) -> Structure:
    """The structure of `model`: its stacks (and stage modules) and wrapper prefix as the
    family found them, the family's static declarations, and the names it exempts from
    weight decay."""
    return Structure(family=family.name, stacks=tuple(stacks), root=root, stages=tuple(stages),
                     head_markers=tuple(family.head_markers),
                     head_attrs=tuple(family.head_attrs), lora_targets=tuple(family.lora_targets),
                     fan_in_fan_out=family.fan_in_fan_out, attention_dropout=tuple(family.attention_dropout),
                     dropout_keys=dict(family.dropout_keys), head_layout=family.head_layout,
                     head_removal=family.head_removal,
                     ffn_layout=family.ffn_layout, depth_keys=tuple(family.depth_keys), no_decay=frozenset(family.no_weight_decay(model)))


def split_group(group: str) -> tuple[str, str]:
    """('image', 'blocks.3') for a tower's group 'image.blocks.3'; ('', 'blocks.3') for a
    single family's. A composed model's own head is ('', 'head')."""
    if group in LOCAL_GROUPS or group.startswith("blocks."):
        return "", group
    tower, _, local = group.partition(".")
    return tower, local


def by_tower(groups: Mapping[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """Groups split by tower ('' for a single family or a composed model's own head)."""
    out: dict[str, dict[str, list[str]]] = {}
    for group, names in groups.items():
        tower, local = split_group(group)
        out.setdefault(tower, {})[local] = names
    return out


def block_groups(local: Mapping[str, list[str]]) -> list[str]:
    """The `blocks.<i>` names of one tower's groups, bottom first."""
    return sorted((g for g in local if g.startswith("blocks.")), key=lambda g: int(g.split(".")[1]))
