"""lora: low-rank adapters through peft on the attention projections, the task head
trained and saved with them (peft's modules_to_save).

model/ always receives the merged model (plain transformers/timm weights). With
lora.merge=false the run folder also keeps adapter/: peft's save_pretrained layout
(adapter_model.safetensors + adapter_config.json, the trained head included) and
fmctl_adapter.json naming the base it applies to; `fmctl eval` loads that pair and gives
exactly the predictions the trained (unmerged) model gave.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmctl.backbones import structure_of
from fmctl.backbones.structure import split_group
from fmctl.config.schema import LoraOp
from fmctl.errors import ConfigError, RunFolderError

if TYPE_CHECKING:
    from fmctl.backbones.structure import Structure
    from fmctl.backbones.composed import Towers

ADAPTER_META = "fmctl_adapter.json"
# Ops that change the model's structure or weights before LoRA: the adapter then needs its
# own copy of the model it was trained on.
_CHANGES_BASE = ("head", "drop_layers", "prune", "dropout")


def _adaptable(model: Any) -> list[str]:
    """Names of modules LoRA can wrap (linear layers, GPT-2's Conv1D)."""
    import torch.nn as nn

    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.append(name)
    return names


def check_targets(model: Any, targets: list[str]) -> None:
    names = _adaptable(model)
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            leaves = sorted({".".join(n.split(".")[-2:]) if n.split(".")[-1].isdigit() else n.split(".")[-1]
                             for n in names})
            raise ConfigError(f"customize.lora.target_modules: '{target}' matches no module; linear modules here "
                              f"are named {', '.join(leaves)}")


def _present(model: Any, defaults: tuple[str, ...]) -> list[str]:
    """The family's default targets this model has: a family covers several layouts (T5's
    q / v, BART's q_proj / v_proj), while targets a user lists must each match."""
    names = _adaptable(model)
    return [t for t in defaults if any(n == t or n.endswith("." + t) for n in names)]


def head_modules(model: Any, structure: Structure | Towers) -> list[str]:
    """The modules holding the task head's parameters (classifier, score, head, pooler;
    every tower's and the composed model's own on a model made of towers)."""
    groups = structure.groups(model)
    return structure.head_modules(n for group, names in groups.items() if split_group(group)[1] == "head"
                                  for n in names)


def apply(model: Any, cfg: LoraOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    from peft import LoraConfig, get_peft_model

    family = ctx.run.backbone.name
    structure = structure_of(model, family)
    targets = list(cfg.target_modules or _present(model, structure.lora_targets))
    if not targets:
        raise ConfigError(f"customize.lora.target_modules: no default for backbone '{family}'; list the modules")
    check_targets(model, targets)
    heads = head_modules(model, structure)
    keep_base = not cfg.merge and _needs_own_base(ctx)
    pre_lora = copy.deepcopy(model) if keep_base else None
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                        modules_to_save=heads or None, fan_in_fan_out=structure.fan_in_fan_out)
    peft_model = get_peft_model(model, config)
    adapters = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)

    def finalize(trained: Any, run_dir: Path) -> Any:
        if not cfg.merge:
            save_adapter(trained, Path(run_dir) / "adapter", pre_lora, ctx)
        return trained.merge_and_unload()

    ctx.finalizers.append(finalize)
    return peft_model, {"targets": ",".join(targets), "adapter_params": adapters, "head_modules": ",".join(heads),
                        "merge": cfg.merge}


def _needs_own_base(ctx: Any) -> bool:
    """The adapter can point at the base folder only when nothing before LoRA changed the
    model and that folder already carries the task's labels."""
    if any(op in _CHANGES_BASE for op in ctx.applied):
        return True
    from fmctl.models import pretrained

    where = pretrained.resolve(ctx.run.base)
    if not isinstance(where, Path) or not (where / "config.json").is_file():
        return True
    from fmctl.models.saved import saved_label_names

    return saved_label_names(where) != list(ctx.data.label_names)


def save_adapter(model: Any, folder: Path, pre_lora: Any, ctx: Any) -> None:
    """adapter/: peft's layout plus the base it applies to, written beside and renamed
    into place."""
    from fmctl.checkpoint import replace_folder

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=folder.parent))
    try:
        import contextlib

        with getattr(ctx.task, "folded", lambda _m: contextlib.nullcontext())(model):  # regression: real-scale head
            model.save_pretrained(str(tmp))
        if pre_lora is not None:
            ctx.task.save_model(pre_lora, ctx.data, tmp / "base")
            base = "base"
        else:
            from fmctl.models import pretrained

            base = str(Path(pretrained.resolve(ctx.run.base)).resolve())
        (tmp / ADAPTER_META).write_text(json.dumps({"base": base, "task": ctx.task.name,
                                                    "label_names": list(ctx.data.label_names)}, indent=2),
                                        encoding="utf-8")
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_adapter_model(folder: Path, task: Any) -> Any:
    """The unmerged LoRA model of a run: its base (as fmctl's task loads it) + adapter/."""
    from peft import PeftModel

    folder = Path(folder)
    meta = json.loads((folder / ADAPTER_META).read_text(encoding="utf-8"))
    base_dir = folder / "base" if meta["base"] == "base" else Path(meta["base"])
    if not (base_dir / "config.json").is_file():
        raise RunFolderError(f"{folder}: its base model '{base_dir}' is gone; restore it, or evaluate the merged "
                             f"model by moving {folder} aside")
    import warnings

    with warnings.catch_warnings():  # transformers' deprecation notices from inside peft
        warnings.simplefilter("ignore", FutureWarning)
        return PeftModel.from_pretrained(task.load_model(base_dir), str(folder)).eval()
