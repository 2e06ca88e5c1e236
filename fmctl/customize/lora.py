"""lora: not implemented yet."""
from __future__ import annotations

from typing import Any

from fmctl.errors import ConfigError


def apply(model: Any, cfg: Any, ctx: Any) -> tuple[Any, dict[str, Any]]:
    raise ConfigError("customize.lora: not implemented yet")
