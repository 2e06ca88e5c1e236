"""Tasks: one module per job, registered here by name (an explicit table, no import
side effects). The loop knows only the `Task` protocol in base.py."""
from __future__ import annotations

from fmctl._suggest import did_you_mean
from fmctl.errors import ConfigError

TASKS = {
    "text_classification": ("fmctl.tasks.text_classification", "TextClassification"),
    "image_classification": ("fmctl.tasks.image_classification", "ImageClassification"),
    "mlm": ("fmctl.tasks.language_modeling", "MaskedLM"),
    "clm": ("fmctl.tasks.language_modeling", "CausalLM"),
    "mim": ("fmctl.tasks.masked_image", "MaskedImageModeling"),
    "token_classification": ("fmctl.tasks.token_classification", "TokenClassification"),
    "extractive_qa": ("fmctl.tasks.extractive_qa", "ExtractiveQA"),
    "regression": ("fmctl.tasks.regression", "Regression"),
    "multilabel_classification": ("fmctl.tasks.multilabel_classification", "MultilabelClassification"),
    "translation": ("fmctl.tasks.seq2seq", "Seq2Seq"),
    "seq2seq": ("fmctl.tasks.seq2seq", "Seq2Seq"),
}


def get_task(cfg):
    """An instance of the task named by cfg.name, configured by cfg (the task group)."""
    name = cfg.name
    if name not in TASKS:
        raise ConfigError(f"task.name: unknown task '{name}'{did_you_mean(name, TASKS)}; available: {', '.join(TASKS)}")
    import importlib

    module, cls = TASKS[name]
    return getattr(importlib.import_module(module), cls)(cfg)
