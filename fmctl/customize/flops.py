"""Forward FLOPs of a model on a real batch, counted by torch.utils.flop_counter.

FlopCounterMode counts the matmuls, convolutions and attention kernels a call really
dispatches (a multiply-add is 2 FLOPs), so a model whose layers shrank counts fewer and one
whose weights are only zeros counts the same. On the CPU, scaled_dot_product_attention
dispatches to a kernel torch's counter has no formula for, which would leave the
attention scores and the weighted sum of values out of the count; the counter is given
torch's own formula for the GPU attention kernels for it.
"""
from __future__ import annotations

from typing import Any, Callable


def forward_flops(call: Callable[[], Any]) -> int:
    """FLOPs of one `call()` (run once, under the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention()) as counter:
        call()
    return int(counter.get_total_flops())


def _cpu_attention() -> dict[Any, Any]:
    """{CPU attention kernel: formula}, unless this torch already counts it."""
    import torch
    from torch.utils import flop_counter

    kernel = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if kernel is None or kernel in flop_counter.flop_registry:
        return {}

    def formula(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    return {kernel: formula}
