"""The task registry: every task's declaration, and every lookup by task name.

The shipped tasks are listed below by module (an explicit table; a module is imported
only when a declaration is first asked for, and importing a task module pulls in no
torch). Each module ends with `TASKS`, its declarations. A task written elsewhere (a
plug-in, a test) joins with `register(declaration)`; from then on `task=<name>` composes,
validates, trains, evaluates, exports and predicts like a shipped one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fmctl._suggest import did_you_mean
from fmctl.errors import ConfigError

if TYPE_CHECKING:
    from fmctl.tasks.declare import TaskDeclaration

_SHIPPED_MODULES = (
    "fmctl.tasks.text_classification",
    "fmctl.tasks.image_classification",
    "fmctl.tasks.token_classification",
    "fmctl.tasks.extractive_qa",
    "fmctl.tasks.regression",
    "fmctl.tasks.multilabel_classification",
    "fmctl.tasks.seq2seq",
    "fmctl.tasks.language_modeling",
    "fmctl.tasks.masked_image",
    "fmctl.tasks.segmentation",
    "fmctl.tasks.contrastive",
    "fmctl.tasks.captioning",
)
_registered: dict[str, "TaskDeclaration"] = {}   # every name (aliases too) -> its declaration
_loaded = False


def register(declaration: "TaskDeclaration") -> "TaskDeclaration":
    """Add a task; a name already taken by another declaration is an error."""
    _load_shipped()
    for name in declaration.names:
        held = _registered.get(name)
        if held is not None and held is not declaration and held.implementation is not declaration.implementation:
            raise ConfigError(f"task '{name}' is already registered (by {held.implementation.__module__})")
    for name in declaration.names:
        _registered[name] = declaration
    return declaration


def _load_shipped() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _SHIPPED_MODULES:
        for declaration in importlib.import_module(module).TASKS:
            for name in declaration.names:
                _registered.setdefault(name, declaration)


def names() -> list[str]:
    """Every task name the config accepts (aliases included), in registration order."""
    _load_shipped()
    return list(_registered)


def declarations() -> list["TaskDeclaration"]:
    """Each task once (an alias does not repeat its declaration)."""
    _load_shipped()
    seen: list[TaskDeclaration] = []
    for declared in _registered.values():
        if declared not in seen:
            seen.append(declared)
    return seen


def declaration(name: str) -> "TaskDeclaration":
    _load_shipped()
    if name not in _registered:
        raise ConfigError(f"task.name: unknown task '{name}'{did_you_mean(name, _registered)}; "
                          f"available: {', '.join(_registered)}")
    return _registered[name]


def create(cfg: Any) -> Any:
    """An instance of the task named by cfg.name, configured by cfg (the task group)."""
    return declaration(cfg.name).implementation(cfg)


def get_task(cfg: Any) -> Any:
    """The name the verbs and tests have always called; see `create`."""
    return create(cfg)


def default_config(name: str) -> Any:
    """The task's config with every default, named `name` (for verbs that read a served
    model without its run's config)."""
    return declaration(name).config(name=name)
