"""Data-parallel and sharded training on torch.distributed, as launched by torchrun.

fmctl does not invent its own distribution: `trainer.nproc=N` re-launches the same
command under `torch.distributed.run`; inside, every rank runs the same loop on its
slice of the same global data order. DDP keeps a replica per rank; FSDP (fully_shard)
shards parameters, gradients and optimizer state by transformer block. Only rank 0
writes the run folder.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The process group torchrun set up, joined (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast(d: Dist, value: Any) -> Any:
    """Rank 0's value on every rank (any picklable object)."""
    if not d.enabled:
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(d: Dist, tensor: Any) -> Any:
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_with_grad(tensor: Any) -> Any:
    """Every rank's `tensor` concatenated along dim 0 (rank 0's first), with gradients: for
    a loss that needs the whole global batch, such as the negatives of a contrastive loss.

    Called from task.loss under DDP: each rank computes its loss against everyone's rows,
    and backward sends this rank the sum, over ranks, of the gradients their losses give
    its own rows. DDP then averages parameter gradients as usual, so training follows the
    gradient of the mean of the ranks' losses, exactly as if one process had computed them
    all on the concatenated batch. Every rank must call it, in the same order, with the
    same shape (fmctl's sampler gives every rank batches of the same size). Without an
    initialised torch.distributed process group of two or more (one process, CPU or GPU)
    it returns `tensor` itself."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _gather_function().apply(tensor)


@functools.cache
def _gather_function() -> Any:
    """The autograd Function behind gather_with_grad, defined on first use so that importing
    this module stays free of torch (the CLI imports it before any torch is needed)."""
    import torch
    import torch.distributed as dist

    class GatherWithGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, tensor: Any) -> Any:
            tensor = tensor.contiguous()
            ctx.rows = tensor.shape[0]
            parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, tensor)
            return torch.cat(parts, dim=0)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            # Sum every rank's gradient of the gathered tensor, keep this rank's rows. An
            # all-reduce rather than a reduce-scatter: gloo (CPU) has no reduce-scatter, and
            # contrastive features (batch x embedding) are small.
            grad = grad.contiguous()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            start = dist.get_rank() * ctx.rows
            return grad[start:start + ctx.rows]

    return GatherWithGrad


def shutdown(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(net: Any, model: Any, strategy: str, d: Dist, device: str, backbone: str) -> Any:
    """DDP around the task-forward module, or fully_shard per transformer block (every
    stack the family `backbone` declares, both towers of a composed model) then the root."""
    if not d.enabled:
        return net
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[d.local_rank] if device == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    from fmctl.backbones import structure_of
    from fmctl.models.cls_only import full_last_layer

    full_last_layer(model)  # FSDP unshards a block around the block's own forward; run every block whole

    for stack in structure_of(model, backbone).stacks:
        for block in model.get_submodule(stack):
            fully_shard(block)
    fully_shard(net)
    return net


def torchrun_command(nproc: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None, argv: list[str]) -> list[str]:
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes > 1:
        if not rdzv_endpoint:
            from fmctl.errors import ConfigError

            raise ConfigError("--rdzv-endpoint: required with --nnodes > 1 (host:port of the first node)")
        command += [f"--nnodes={nnodes}", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
                    f"--rdzv_endpoint={rdzv_endpoint}"]
    else:
        command += ["--standalone"]
    return command + ["-m", "fmctl", *argv]
