"""Named model sizes: a new size is one row of data.

The names follow the compact BERT family of Turc et al. (2019), used for all three
backbones so that `backbone.size=mini` means the same shape for BERT, GPT and ViT.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    num_layers: int
    num_heads: int

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size


SIZES = {
    "tiny": Shape(128, 2, 2),
    "mini": Shape(256, 4, 4),
    "small": Shape(512, 4, 8),
    "base": Shape(768, 12, 12),
}


def shape_for(size: str, hidden_size: int | None = None, num_layers: int | None = None,
              num_heads: int | None = None) -> Shape:
    base = SIZES[size]
    shape = Shape(hidden_size or base.hidden_size, num_layers or base.num_layers, num_heads or base.num_heads)
    if shape.hidden_size % shape.num_heads:
        from fmctl.errors import ConfigError

        raise ConfigError(f"backbone.num_heads: hidden size {shape.hidden_size} is not divisible by "
                          f"{shape.num_heads} heads")
    return shape
