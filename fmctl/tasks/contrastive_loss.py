"""The two image-text losses, over every rank's pairs.

`clip`: the symmetric InfoNCE of CLIP (Radford et al. 2021): each image's caption among
all captions of the global batch, and each caption's image among all images, by cross
entropy over scale x cosine. `siglip`: the sigmoid loss of SigLIP (Zhai et al. 2023):
every image-caption pair of the global batch an independent binary decision, normalised
by the global batch size.

While training (gradients on), each rank scores its own rows against every rank's rows,
gathered with fmctl.loop.distributed.gather_with_grad; the mean over ranks (DDP's
gradient average) is then the loss of one process over the whole global batch. At
evaluation (no gradients) every rank scores the same batches, so nothing is gathered.

Pairs whose captions are the same text (caption ids from fmctl.data.image_text) are not
each other's negatives: a repeated caption describes both images, so pushing it away from
one of them would punish a correct match. Those cells are left out of the softmax (clip)
or out of the sum (siglip); each row keeps its own positive.
"""
from __future__ import annotations

from typing import Any

LOSSES = ("clip", "siglip")


def _everyone(tensor: Any) -> tuple[Any, int]:
    """(every rank's rows, where this rank's rows start), gathering only while training."""
    import torch
    import torch.distributed as dist

    from fmctl.loop.distributed import gather_with_grad

    if not torch.is_grad_enabled() or not (dist.is_available() and dist.is_initialized()):
        return tensor, 0
    return gather_with_grad(tensor), dist.get_rank() * tensor.shape[0]


def contrastive_loss(kind: str, image: Any, text: Any, scale: Any, bias: Any, caption_ids: Any) -> Any:
    """The loss of this rank's pairs (image[i], text[i]) against every rank's pairs."""
    import torch

    image, text = image.float(), text.float()
    all_image, offset = _everyone(image)
    all_text, _ = _everyone(text)
    all_ids, _ = _everyone(caption_ids)
    rows = torch.arange(image.shape[0], device=image.device)
    positives = rows + offset
    repeated = caption_ids[:, None] == all_ids[None, :]
    repeated[rows, positives] = False  # a row's own positive stays
    if kind == "clip":
        return _clip(image, text, all_image, all_text, scale.float(), positives, repeated)
    if kind == "siglip":
        return _siglip(image, all_text, scale.float(), bias.float(), positives, repeated)
    raise ValueError(f"unknown contrastive loss '{kind}'; one of {', '.join(LOSSES)}")


def _clip(image: Any, text: Any, all_image: Any, all_text: Any, scale: Any, positives: Any, repeated: Any) -> Any:
    import torch.nn.functional as F

    per_image = (scale * image @ all_text.T).masked_fill(repeated, float("-inf"))
    per_text = (scale * text @ all_image.T).masked_fill(repeated, float("-inf"))
    return (F.cross_entropy(per_image, positives) + F.cross_entropy(per_text, positives)) / 2


def _siglip(image: Any, all_text: Any, scale: Any, bias: Any, positives: Any, repeated: Any) -> Any:
    import torch
    import torch.nn.functional as F

    logits = scale * image @ all_text.T + bias
    signs = -torch.ones_like(logits)
    signs[torch.arange(image.shape[0], device=image.device), positives] = 1.0
    terms = F.logsigmoid(signs * logits).masked_fill(repeated, 0.0)
    return -terms.sum() / image.shape[0]
