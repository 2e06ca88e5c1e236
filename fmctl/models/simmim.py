"""SimMIM (Xie et al., 2022) around a timm ViT: masked patches are replaced by a learned
token and a linear decoder regresses their pixels. Only the encoder is kept in model/,
so fine-tuning loads it like any timm ViT."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SimMIM(nn.Module):
    def __init__(self, encoder: Any):
        super().__init__()
        self.encoder = encoder
        width = encoder.embed_dim
        patch = encoder.patch_embed.patch_size
        self.patch = patch[0] if isinstance(patch, tuple) else patch
        self.in_chans = encoder.patch_embed.proj.in_channels
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Linear(width, self.patch * self.patch * self.in_chans)
        self._mask: torch.Tensor | None = None
        # Swap masked patch embeddings for the mask token before position embeddings are
        # added, through a hook so timm's own forward_features stays in charge.
        encoder.patch_embed.register_forward_hook(self._apply_mask)

    def _apply_mask(self, module: Any, inputs: Any, patches: torch.Tensor) -> torch.Tensor:
        if self._mask is None:
            return patches
        weight = self._mask.unsqueeze(-1).to(patches.dtype)
        return patches * (1 - weight) + self.mask_token.to(patches.dtype) * weight

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted pixels for every patch: (batch, patches, patch*patch*channels)."""
        self._mask = mask
        try:
            tokens = self.encoder.forward_features(pixels)
        finally:
            self._mask = None
        return self.decoder(tokens[:, self.encoder.num_prefix_tokens:])

    def patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c, h, w = pixels.shape
        p = self.patch
        grid = pixels.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return grid.reshape(b, (h // p) * (w // p), p * p * c)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", *(f"encoder.{n}" for n in self.encoder.no_weight_decay())}
