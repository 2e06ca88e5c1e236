"""Exponential moving average of the trainable parameters (weight averaging).

After every optimizer step: shadow <- decay * shadow + (1 - decay) * param. Evaluation,
the best checkpoint and model/ use the averaged weights (`applied`); training continues
on the raw ones. The shadow tensors go into the checkpoint's state, so a resumed run
averages exactly as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


class EMA:
    def __init__(self, model: Any, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = self._params(model)  # the trained tensors, looked up once, not every step
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def _params(self, model: Any) -> list[Any]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    def update(self) -> None:
        import torch

        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)
        self.updates += 1

    def copy_to(self, model: Any) -> None:
        import torch

        with torch.no_grad():
            for param, average in zip(self._params(model), self.shadow):
                param.copy_(average)

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        """The averaged weights in the model for the duration; the raw ones restored after."""
        import torch

        params = self._params(model)
        raw = [p.detach().clone() for p in params]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(params, raw):
                    param.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(zip(self.names, self.shadow))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.shadow = [state["shadow"][n].to(device=s.device, dtype=s.dtype) for n, s in zip(self.names, self.shadow)]
