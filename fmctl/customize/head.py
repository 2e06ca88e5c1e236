"""head: re-initialise the task head, or replace it with an MLP of configurable depth,
width, activation and dropout.

An MLP head is recorded in the saved config (`fmctl_head` in config.json) and rebuilt by
fmctl's loaders (`restore_head`), because transformers' and timm's classes know only a
linear head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.backbones import structure_of
from fmctl.config.schema import HeadOp
from fmctl.errors import ConfigError


def find_head(model: Any, attrs: tuple[str, ...]) -> tuple[str, Any]:
    """(attribute, module) of the model's linear or MLP task head; `attrs` are where the
    backbone family says a head may be (BERT classifier, GPT-2 score, timm head, QA outputs)."""
    import torch.nn as nn

    for attr in attrs:
        module = getattr(model, attr, None)
        if isinstance(module, (nn.Linear, nn.Sequential)):
            return attr, module
    where = ", ".join(attrs) or "nothing: the backbone declares no head attribute"
    raise ConfigError(f"customize.head: no linear task head found (looked for {where})")


def _linears(module: Any) -> list[Any]:
    import torch.nn as nn

    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def build_mlp(spec: dict[str, Any]) -> Any:
    import torch.nn as nn

    acts = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
    layers: list[Any] = []
    width = spec["in_features"]
    for _ in range(spec["layers"] - 1):
        layers += [nn.Linear(width, spec["hidden"]), acts[spec["activation"]](), nn.Dropout(spec["dropout"])]
        width = spec["hidden"]
    layers.append(nn.Linear(width, spec["out_features"], bias=spec["bias"]))
    return nn.Sequential(*layers)


def _init(module: Any) -> None:
    import torch

    for linear in _linears(module):
        torch.nn.init.normal_(linear.weight, std=0.02)
        if linear.bias is not None:
            torch.nn.init.zeros_(linear.bias)


def apply(model: Any, cfg: HeadOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    attr, head = find_head(model, structure_of(model, ctx.run.backbone.name).head_attrs)
    linears = _linears(head)
    first, last = linears[0], linears[-1]
    if cfg.layers == 1:
        if cfg.reinit:
            _init(head)
        return model, {"head": attr, "reinitialised": cfg.reinit}
    spec = {"attr": attr, "layers": cfg.layers, "in_features": first.in_features,
            "hidden": cfg.hidden or first.in_features, "out_features": last.out_features,
            "bias": last.bias is not None, "activation": cfg.activation, "dropout": cfg.dropout}
    mlp = build_mlp(spec).to(first.weight.device)
    _init(mlp)
    setattr(model, attr, mlp)
    _record(model, spec)
    return model, {"head": attr, "mlp_layers": cfg.layers, "hidden": spec["hidden"]}


def _record(model: Any, spec: dict[str, Any]) -> None:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        config.fmctl_head = spec          # transformers writes it into config.json
    else:
        model.fmctl_head = spec           # timm: fmctl.models.vision.save adds it to config.json


def restore_head(model: Any, spec: dict[str, Any] | None, folder: Path | None = None) -> Any:
    """Put the recorded MLP head back on a freshly loaded model and, with `folder`, load
    its weights from folder/model.safetensors."""
    if not spec:
        return model
    mlp = build_mlp(spec)
    if folder is not None:
        from safetensors.torch import load_file

        prefix = spec["attr"] + "."
        state = {k[len(prefix):]: v for k, v in load_file(str(Path(folder) / "model.safetensors")).items()
                 if k.startswith(prefix)}
        mlp.load_state_dict(state)
    setattr(model, spec["attr"], mlp)
    _record(model, spec)
    return model
