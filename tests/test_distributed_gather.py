"""fmctl.loop.distributed.gather_with_grad: every rank's rows, and gradients that add up
to what one process computing every rank's loss on the whole batch would get."""
import socket
from datetime import timedelta

import torch
import torch.multiprocessing as mp

from fmctl.loop.distributed import gather_with_grad

WORLD, ROWS, DIM = 2, 3, 4


def global_batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * ROWS, DIM, generator=generator, dtype=torch.float64)


def rank_loss(mine, everyone, rank):
    """A contrastive loss: this rank's rows against every row of the global batch (its own
    reach the loss twice, directly and through the gather), the matching row the target."""
    logits = mine @ everyone.T
    targets = torch.arange(ROWS) + rank * ROWS
    return torch.nn.functional.cross_entropy(logits, targets) * (rank + 1)  # ranks weigh differently


def _worker(rank, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=30))
    try:
        mine = global_batch()[rank * ROWS:(rank + 1) * ROWS].clone().requires_grad_()
        everyone = gather_with_grad(mine * 1.0)  # a non-leaf input, as features are
        rank_loss(mine, everyone, rank).backward()
        torch.save({"gathered": everyone.detach(), "grad": mine.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_gather_every_row_and_get_the_single_process_gradient(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    batch = global_batch().requires_grad_()
    total = sum(rank_loss(batch[r * ROWS:(r + 1) * ROWS], batch, r) for r in range(WORLD))
    total.backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["gathered"], global_batch())
        expected = batch.grad[rank * ROWS:(rank + 1) * ROWS]
        assert torch.allclose(got["grad"], expected, rtol=1e-10, atol=1e-12), (rank, got["grad"], expected)
    # Without the gather's backward only each rank's direct term would arrive: not the same.
    direct = global_batch()[:ROWS].clone().requires_grad_()
    rank_loss(direct, torch.cat([direct.detach(), global_batch()[ROWS:]]), 0).backward()
    assert not torch.allclose(direct.grad, batch.grad[:ROWS])


def test_one_process_is_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    gathered = gather_with_grad(x)
    assert gathered is x
    (gathered * torch.arange(6.0).view(3, 2)).sum().backward()
    assert torch.equal(x.grad, torch.arange(6.0).view(3, 2))
