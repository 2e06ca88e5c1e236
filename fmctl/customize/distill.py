"""distill: knowledge distillation from a teacher run into the customised student.

The training loss becomes (1 - alpha) * task loss + alpha * T^2 * KL(teacher_T || student_T)
on temperature-scaled logits (Hinton et al.), through the shared loop's loss hook. The
teacher runs in inference mode inside the loop's autocast, so it sees the precision the
student trains in. Evaluation and the best-model choice use the task's own loss/metrics.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmctl.config.schema import DistillOp
from fmctl.errors import ConfigError


class DistillLoss:
    def __init__(self, teacher: Any, task: Any, alpha: float, temperature: float):
        self.teacher = teacher
        self.task = task
        self.alpha = alpha
        self.temperature = temperature
        self._device = None

    def kd(self, student_logits: Any, teacher_logits: Any) -> Any:
        import torch.nn.functional as F

        t = self.temperature
        return F.kl_div(F.log_softmax(student_logits.float() / t, -1), F.log_softmax(teacher_logits.float() / t, -1),
                        log_target=True, reduction="batchmean") * (t * t)

    def __call__(self, loss: Any, outputs: Any, batch: dict[str, Any]) -> Any:
        import torch

        if self._device != outputs.device:
            self.teacher.to(outputs.device)
            self._device = outputs.device
        with torch.inference_mode():
            teacher_logits = self.task.forward(self.teacher, batch)
        teacher_logits = teacher_logits.clone()  # a normal tensor, usable by autograd
        return (1.0 - self.alpha) * loss + self.alpha * self.kd(outputs, teacher_logits)


def teacher_labels(folder: Path) -> list[str]:
    """The label names a model folder (or its run folder's manifest) was trained on."""
    for manifest in (folder.parent / "manifest.json", folder / "manifest.json"):
        if manifest.is_file():
            names = json.loads(manifest.read_text(encoding="utf-8")).get("label_names")
            if names:
                return list(names)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("label_names"):
        return list(config["label_names"])
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def apply(model: Any, cfg: DistillOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    from fmctl.models import pretrained

    folder = pretrained.resolve(cfg.teacher, "customize.distill.teacher")
    if not isinstance(folder, Path) or not folder.is_dir():
        raise ConfigError(f"customize.distill.teacher: '{cfg.teacher}' is not a run folder or model folder")
    labels = teacher_labels(folder)
    if labels != list(ctx.data.label_names):
        raise ConfigError(f"customize.distill.teacher: its labels [{', '.join(labels)}] differ from the student's "
                          f"[{', '.join(ctx.data.label_names)}]; distil from a run trained on the same labels")
    teacher = ctx.task.load_model(folder).eval()
    _check_same_inputs(folder, teacher, ctx.data.preprocessor)
    for param in teacher.parameters():
        param.requires_grad_(False)
    ctx.loss_hooks.append(DistillLoss(teacher, ctx.task, cfg.alpha, cfg.temperature))
    return model, {"teacher": str(folder), "teacher_params": sum(p.numel() for p in teacher.parameters()),
                   "alpha": cfg.alpha, "temperature": cfg.temperature}


def _check_same_inputs(folder: Path, teacher: Any, student_preprocessor: Any) -> None:
    """The teacher is fed the student's batches as they are, so it must read the same
    inputs: the same vocabulary (token ids mean the same words) or the same image size and
    normalisation. A different tokenizer would make the teacher score meaningless id
    sequences (or index past its embeddings) and the KL term would teach noise."""
    if isinstance(student_preprocessor, dict):  # images: the preprocessing dict its backbone family gives
        from fmctl import backbones

        theirs = backbones.of_folder(folder).preprocessor(None, folder=folder)
        keys = ("image_size", "in_chans", "mean", "std")
        if any(theirs[k] != student_preprocessor[k] for k in keys):
            mine = ", ".join(f"{k}={student_preprocessor[k]}" for k in keys)
            raise ConfigError(f"customize.distill.teacher: '{folder}' reads images as "
                              f"{', '.join(f'{k}={theirs[k]}' for k in keys)}, the student as {mine}; "
                              f"distil from a teacher with the student's input size and normalisation")
        return
    if student_preprocessor is None or not hasattr(student_preprocessor, "get_vocab"):
        return
    from fmctl.models.text import load_tokenizer_only

    try:
        teacher_vocab = load_tokenizer_only(folder).get_vocab()
    except Exception:  # no tokenizer saved with the teacher: nothing to compare against
        raise ConfigError(f"customize.distill.teacher: '{folder}' has no tokenizer to check against the "
                          f"student's; distil from an fmctl run or a save_pretrained folder with its tokenizer") from None
    student_vocab = student_preprocessor.get_vocab()
    if teacher_vocab != student_vocab:
        raise ConfigError(f"customize.distill.teacher: '{folder}' uses another tokenizer ({len(teacher_vocab)} "
                          f"tokens) than the student ({len(student_vocab)} tokens), and the teacher is fed the "
                          f"student's token ids; distil from a teacher that shares the student's tokenizer")
