"""Set-up and restore: everything fit() needs before its first step.

`build` places the model (device, precision, kernels, dropout masks, DDP/FSDP wrap,
torch.compile), lays out the data (sampler, loaders, step counts) and makes the
optimizer, schedule, grad scaler and EMA; `restore` puts a checkpoint's state back into
them. Both run in a fixed order: nothing here may draw from the global RNG that dropout
uses, or a resumed run would diverge from an uninterrupted one.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from fmctl.config.schema import RunConfig, TrainerConfig
from fmctl.loop import distributed
from fmctl.loop.distributed import Dist
from fmctl.loop.dropout_masks import dropout_masks, resolve_dropout_masks
from fmctl.loop.evaluation import TaskForward, make_loader
from fmctl.loop.optim import apply_configured_hyperparameters, build_optimizer, configured_hyperparameters
from fmctl.loop.precision import Precision, pick_device, resolve_precision
from fmctl.loop.sampler import EpochSampler
from fmctl.loop.schedule import build_scheduler
from fmctl.loop.state import Progress, restore_rng
from fmctl.tasks.base import Task


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (before the model is built)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def enable_gradient_checkpointing(model: Any) -> None:
    """transformers' per-layer checkpointing (non-reentrant, so frozen inputs and LoRA work)
    or timm's; a model with neither is an error rather than a silent no-op."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 (the older name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    else:
        from fmctl.errors import ConfigError

        raise ConfigError(f"trainer.gradient_checkpointing: {type(model).__name__} supports no activation "
                          f"checkpointing; set trainer.gradient_checkpointing=false")


@dataclass
class Parts:
    """What set-up built, read by the step, evaluation and checkpointing."""

    trainer: TrainerConfig
    dist: Dist
    device: str
    precision: Precision
    kernels: str                    # 'triton' or 'torch'
    patched: dict[str, int] | None  # what the Triton kernels replaced (kernels=triton)
    masks_name: str                 # dropout masks: 'torch' or 'packed'
    masks: Any                      # the context that installs them around forward
    model: Any
    net: Any                        # TaskForward, wrapped by DDP/FSDP under torchrun
    train_forward: Any              # `net`, compiled with trainer.compile
    sampler: EpochSampler
    loader_rng: Any
    train_loader: Any
    eval_loader: Any | None
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    optimizer: Any
    scheduler: Any
    scaler: Any | None
    ema: Any | None

    @property
    def ddp(self) -> bool:
        return self.dist.enabled and self.trainer.strategy == "ddp"

    @property
    def sharded(self) -> bool:
        return self.dist.enabled and self.trainer.strategy == "fsdp"


def build(model: Any, task: Any, data: Any, run: RunConfig, d: Dist) -> Parts:
    """Every part of training, in the order the RNG-sensitive steps need."""
    trainer = run.trainer
    device, precision, kernels, patched = _place(model, trainer)
    masks_name = resolve_dropout_masks(trainer.dropout_masks, device, trainer.gradient_checkpointing, trainer.compile)
    net = distributed.wrap(TaskForward(model, task, fused=kernels == "triton"), model, trainer.strategy, d, device,
                           run.backbone.name)
    # dynamic=True: length-grouped batches change the sequence length every step, and one
    # graph with a symbolic length beats a recompile per length.
    train_forward = torch.compile(net, dynamic=True) if trainer.compile else net
    lengths = data.train.lengths() if run.data.group_by_length and hasattr(data.train, "lengths") else None
    sampler = EpochSampler(len(data.train), seed=trainer.seed, rank=d.rank, world_size=d.world_size,
                           lengths=lengths, batch_size=trainer.batch_size)
    loader_rng = torch.Generator()
    pin = device == "cuda"
    train_loader = make_loader(data.train, trainer.batch_size, data.collate, sampler, run.data.num_workers, pin,
                               drop_last=trainer.drop_last, generator=loader_rng)
    eval_loader = None
    if data.validation is not None and len(data.validation):
        eval_loader = make_loader(data.validation, trainer.eval_batch_size or trainer.batch_size * 2, data.collate,
                                  None, run.data.num_workers, pin)
    batches_per_epoch, steps_per_epoch, total_steps = step_counts(sampler.per_rank, trainer)
    optimizer = build_optimizer(model, run.optim, device, run.backbone.name)
    scheduler = build_scheduler(optimizer, run.sched, total_steps)
    scaler = precision.scaler()
    ema = None
    if trainer.ema.decay is not None:
        from fmctl.loop.ema import EMA

        ema = EMA(model, trainer.ema.decay)
    return Parts(trainer, d, device, precision, kernels, patched, masks_name, dropout_masks(masks_name), model,
                 net, train_forward, sampler, loader_rng, train_loader, eval_loader, batches_per_epoch,
                 steps_per_epoch, total_steps, optimizer, scheduler, scaler, ema)


def _place(model: Any, trainer: TrainerConfig) -> tuple[str, Precision, str, dict[str, int] | None]:
    """The model on its device in training mode, with checkpointing and kernels as asked."""
    device = pick_device(trainer.device)
    precision = Precision(resolve_precision(trainer.precision, device), device)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    model.to(device)
    model.train()
    if trainer.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    from fmctl.kernels import choose

    kernels = choose(trainer.kernels, device)
    patched = None
    if kernels == "triton":
        from fmctl.kernels.patch import apply as patch_kernels

        patched = patch_kernels(model)
    return device, precision, kernels, patched


def step_counts(per_rank: int, trainer: TrainerConfig) -> tuple[int, int, int]:
    """(micro-batches per epoch, optimizer steps per epoch, total optimizer steps) for a
    rank's share of `per_rank` examples; trainer.max_steps wins over trainer.epochs."""
    batches = per_rank // trainer.batch_size if trainer.drop_last else math.ceil(per_rank / trainer.batch_size)
    per_epoch = max(1, math.ceil(batches / trainer.grad_accum))
    return batches, per_epoch, trainer.max_steps or max(1, math.ceil(trainer.epochs * per_epoch))


def restore(parts: Parts, resume: dict[str, Any]) -> Progress:
    """A checkpoint's optimizer, schedule, scaler, EMA and RNG states put back; its counters
    returned. The configured hyperparameters (a lowered optim.lr) win over the saved ones."""
    optimizer = parts.optimizer
    configured = configured_hyperparameters(optimizer)
    if "optimizer" in resume:
        if parts.sharded:
            from fmctl.errors import ConfigError

            raise ConfigError("trainer.strategy: this checkpoint was written without FSDP; resume it with "
                              "trainer.strategy=ddp (or one process)")
        optimizer.load_state_dict(resume["optimizer"])
    else:
        from fmctl.loop.sharded import load_sharded

        load_sharded(resume["dcp"], parts.model, optimizer)  # resharded to this world size
    parts.scheduler.load_state_dict(resume["scheduler"])
    apply_configured_hyperparameters(optimizer, parts.scheduler, configured)
    if parts.scaler is not None and resume.get("scaler"):
        parts.scaler.load_state_dict(resume["scaler"])
    progress = Progress.from_dict(resume["progress"])
    restore_rng(resume["rng"])
    if parts.ema is not None and resume.get("ema"):
        parts.ema.load_state_dict(resume["ema"])
    return progress


def begin_epoch(parts: Parts, data: Any, progress: Progress) -> None:
    """Position the data at progress.epoch / progress.batches_into_epoch: the sampler's
    order and start, the dataset's per-epoch randomness (MLM masks), the workers' seeds."""
    seed = parts.trainer.seed
    parts.sampler.set_epoch(progress.epoch, start=progress.batches_into_epoch * parts.trainer.batch_size)
    if hasattr(data.train, "set_epoch"):
        data.train.set_epoch(progress.epoch)
    parts.loader_rng.manual_seed(seed * 1_000_003 + progress.epoch)


def describe(parts: Parts, task: Any, resumed_at: int | None) -> str:
    """The console line that opens training: shape of the run and every choice made."""
    trainer = parts.trainer
    text = (f"training {parts.total_steps} steps ({parts.steps_per_epoch}/epoch), batch {trainer.batch_size}"
            f"×{trainer.grad_accum}, precision {parts.precision.name}, device {parts.device}, kernels {parts.kernels}")
    if parts.kernels == "triton":
        fused = "yes" if type(task).fused_forward is not Task.fused_forward else "no"
        text += (f" ({parts.patched['layer_norms']} LayerNorms, {parts.patched['bias_gelu']} bias+GELU, "
                 f"fused LM loss: {fused})")
    text += f", dropout masks {parts.masks_name}" + (", torch.compile" if trainer.compile else "")
    return text + (f", resumed at step {resumed_at}" if resumed_at is not None else "")
