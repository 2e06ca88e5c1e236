"""Contrastive image-text training (CLIP, SigLIP; LiT when a tower is locked) on tables of
image-caption pairs, run by `fmctl pretrain` and `fmctl finetune` alike.

Evaluation reports retrieval both ways (fmctl.tasks.retrieval); `fmctl eval` adds
zero-shot classification of a class-folder image set (fmctl.tasks.zero_shot). Export
writes an image encoder and a text encoder, each its own ONNX graph.

Gradient accumulation is refused rather than implemented: accumulating losses over
micro-batches would give each pair only its micro-batch's negatives (the silent
reduction users of other tools report); open_clip's embedding cache (--accum-freq)
would need a second forward pass per micro-batch that the shared loop does not make.
A larger batch, or more processes (every rank's embeddings are negatives), gives more
negatives instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from fmctl import backbones
from fmctl.config.schema import RunConfig, bounded
from fmctl.data.image_text import PairCollator, PairDataset, read_image_text
from fmctl.data.sources import split_paths
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import read_splits
from fmctl.tasks.declare import IMAGE_INPUTS, TEXT_INPUTS, Graph, Serving, TaskDeclaration
from fmctl.tasks.retrieval import METRICS, RetrievalMetrics
from fmctl.tasks.text_inputs import fingerprints

# The sigmoid loss's learnable bias starts here (SigLIP): most pairs of a batch are negatives.
SIGLIP_BIAS_INIT = -10.0


@dataclass
class ContrastiveTaskConfig:
    name: Literal["contrastive"] = "contrastive"
    # clip: softmax over the global batch, image -> caption and caption -> image (CLIP);
    # siglip: a sigmoid per image-caption pair with a learnable bias (SigLIP).
    loss: Literal["clip", "siglip"] = "clip"
    # LiT: keep one tower (usually a pretrained one) fixed, its dropout off, and train the other
    # tower and both projections to meet it.
    lock: Optional[Literal["image", "text"]] = None
    # With lock: how many top blocks of the locked tower still train (with its final norm).
    unlocked_layers: int = bounded(0, ge=0)
    # Zero-shot classification: each class name goes where '{}' is; a class's embedding is the
    # mean over the templates (several wordings make the scores depend less on one phrasing).
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}.", "a picture of a {}.",
                                                          "an image of a {}."])
    # An image folder with one sub-folder per class, classified zero-shot by `fmctl eval`.
    zero_shot: Optional[str] = None


class Contrastive(Task):
    def __init__(self, cfg: ContrastiveTaskConfig):
        self.cfg = cfg
        self.augment = False

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        warnings: list[str] = []
        rows = read_splits(run.data, paths, lambda p: read_image_text(p, run.data, warnings), splits)
        if model_dir:
            prep = backbones.of_folder(model_dir).preprocessor(run.backbone, folder=model_dir)
        else:
            prep = backbones.family(run.backbone.name).preprocessor(
                run.backbone, training_texts=lambda: (r.text for r in rows["train"]))
            prep["text"].model_max_length = run.data.max_length  # saved with model/: truncates as training did
        tokenizer = prep["text"]
        in_chans = prep["image"]["in_chans"] if "image" in prep else _in_chans(run)
        datasets = {split: PairDataset(split_rows, _encode(tokenizer, split_rows, run.data.max_length), in_chans)
                    for split, split_rows in rows.items()}
        from fmctl.data.text import pad_multiple

        data = PreparedData(train=datasets.get("train"), validation=datasets.get("validation"),
                            test=datasets.get("test"), collate=PairCollator(tokenizer.pad_token_id, pad_multiple(run)),
                            label_names=[], preprocessors=prep, sources=fingerprints(paths), rows=rows,
                            warnings=warnings)
        self.augment = run.data.augment
        if "image" in prep:
            self._attach_images(data, prep["image"])
        return data

    def _attach_images(self, data: PreparedData, prep: dict[str, Any]) -> None:
        """Images follow the model's input size and normalisation, so their transforms are
        attached once the image tower exists."""
        from fmctl.data.images import attach_transforms

        data.preprocessors = {**data.preprocessors, "image": prep}
        attach_transforms(data, prep, self.augment)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        family = self.backbone = backbones.family(run.backbone.name)
        model = family.build(run.backbone, "contrastive", data.preprocessors,
                             logit_bias_init=SIGLIP_BIAS_INIT if self.cfg.loss == "siglip" else None)
        if self.cfg.lock:
            from fmctl.tasks.contrastive_lock import lock_tower

            lock_tower(model, self.cfg.lock, self.cfg.unlocked_layers, run.backbone.name)
        self._attach_images(data, family.preprocessor(run.backbone, model=model)["image"])
        return model

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any:
        from fmctl.tasks.contrastive_loss import contrastive_loss

        image, text, scale, bias = outputs
        return contrastive_loss(self.cfg.loss, image, text, scale, bias, batch["labels"])

    def has_targets(self, batch: dict[str, Any]) -> bool:
        return True

    def new_metrics(self) -> RetrievalMetrics:
        return RetrievalMetrics()

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder, data.preprocessors)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        return self.backbone.load(folder)[0]

    def example_fields(self, row: Any) -> dict[str, Any]:
        return {"image": str(row.path), "caption": row.text}

    def more_evaluations(self, model: Any, run: RunConfig, model_dir: Path, device: str,
                         precision: Any) -> dict[str, tuple[Any, list[Any]]]:
        """`task.zero_shot`: the class folders classified zero-shot, written to eval/zero_shot/."""
        if not self.cfg.zero_shot:
            return {}
        from fmctl.tasks.zero_shot import zero_shot

        prep = backbones.of_folder(model_dir).preprocessor(run.backbone, folder=model_dir)
        batch = run.trainer.eval_batch_size or run.trainer.batch_size * 2
        return {"zero_shot": zero_shot(model, Path(self.cfg.zero_shot).expanduser(), list(self.cfg.templates), prep,
                                       run.data.max_length, batch, device, precision)}

    # ---- serving: two graphs, an image encoder and a text encoder ------------------------
    def served_label_names(self, model_dir: Path, data: PreparedData) -> list[str]:
        return []

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": name, "dtype": "float32", "shape": ["batch", "embed_dim"]}
                for name in ("image_embeds", "text_embeds")]

    def export_module(self, model: Any, graph: str, input_names: list[str]) -> Any:
        from fmctl.models.two_tower import ImageEncoder, TextEncoder

        return (ImageEncoder(model) if graph == "image_encoder" else TextEncoder(model, input_names)).eval()

    def graph_measure(self, graph: str, model: Any, data: PreparedData, input_names: dict[str, list[str]]) -> Any:
        """Agreement of an encoder's export: the nearest item of the other modality (by the
        PyTorch model's embeddings of the same validation pairs) must stay the same, and
        every embedding must keep a cosine of at least 0.999 with PyTorch's."""
        from fmctl.export.measures import NearestOfOther
        from fmctl.tasks.contrastive_export import reference_embeddings

        other = "text" if graph == "image_encoder" else "image"
        embeddings, ids = reference_embeddings(model, data, other, input_names)
        return NearestOfOther(embeddings, ids, other)

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        from fmctl.tasks.contrastive_export import postprocessing

        return postprocessing(self.cfg, model_dir)


def _encode(tokenizer: Any, rows: list[Any], max_length: int) -> list[dict[str, list[int]]]:
    encoded = tokenizer([r.text for r in rows], truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(rows))]


def _in_chans(run: RunConfig) -> int:
    image = getattr(run.backbone, "image", None)
    return getattr(image, "in_chans", 3)


def _checks(run: RunConfig) -> list[str]:
    problems = []
    task, trainer = run.task, run.trainer
    if trainer.batch_size < 2:
        problems.append(f"trainer.batch_size: contrastive training needs at least 2 pairs per batch (each pair's "
                        f"negatives are the others), got {trainer.batch_size}")
    if trainer.grad_accum > 1:
        problems.append(f"trainer.grad_accum: {trainer.grad_accum} would give each pair only its micro-batch's "
                        f"negatives; contrastive training does not accumulate: raise trainer.batch_size or add "
                        f"processes (trainer.nproc), whose embeddings all serve as negatives")
    if task.unlocked_layers and not task.lock:
        problems.append("task.unlocked_layers: only with task.lock=image or task.lock=text")
    if not task.templates:
        problems.append("task.templates: empty; give at least one, e.g. ['a photo of a {}.']")
    for i, template in enumerate(task.templates):
        if template.count("{}") != 1:
            problems.append(f"task.templates[{i}]: '{template}' needs exactly one '{{}}' where the class name goes")
    return problems


TASKS = (TaskDeclaration(
    name="contrastive", config=ContrastiveTaskConfig, implementation=Contrastive, backbones=("clip",),
    metrics=METRICS, main_metric="recall_sum", main_mode="max", minimized=("i2t_median_rank", "t2i_median_rank"),
    verbs=("pretrain", "finetune"), checks=_checks,
    serving=Serving(reads="image_text", inputs=(*IMAGE_INPUTS, *TEXT_INPUTS), outputs=("image_embeds", "text_embeds"),
                    graphs=(Graph("image_encoder", IMAGE_INPUTS, ("image_embeds",)),
                            Graph("text_encoder", TEXT_INPUTS, ("text_embeds",))),
                    formats=("onnx",), auto_class="AutoModel")),)
