"""Fault injection for the reliability tests, driven by environment variables.

FMCTL_FAULT_KILL_AT="S.M"       SIGKILL this process when S optimizer steps are done and
                                M micro-batches of the next step have been accumulated
                                (FMCTL_FAULT_KILL_SIGNAL=TERM or INT sends that signal instead;
                                FMCTL_FAULT_KILL_TARGET=launcher or launcher-group sends it, from
                                rank 0 only, to fmctl's torchrun launcher or to its process group).
FMCTL_FAULT_SAVE_DELAY=SECONDS  sleep inside every checkpoint save, after the weights and
                                before the training state, so a test can kill mid-save.
FMCTL_FAULT_NONFINITE=S1,S2     make the loss NaN in the S1-th and S2-th optimizer step attempts
                                (1-based, skipped attempts included).
Unset (always, outside tests), each check is a dictionary lookup done once per fit.

The loop does not read these: Faults is a LoopHooks that the caller of fit() passes in
(`fit(..., hooks=Faults.from_env().installed_in(folder))`), so the training loop holds no
test code and the faults wrap it from outside.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from fmctl.loop.hooks import LoopHooks


@dataclass
class Faults(LoopHooks):
    kill_at: tuple[int, int] | None = None
    kill_signal: int = signal.SIGKILL
    save_delay: float = 0.0
    nonfinite_steps: set[int] = field(default_factory=set)
    kill_target: str = "self"

    @classmethod
    def from_env(cls) -> "Faults":
        kill = os.environ.get("FMCTL_FAULT_KILL_AT")
        steps = os.environ.get("FMCTL_FAULT_NONFINITE", "")
        return cls(
            kill_at=tuple(int(x) for x in kill.split(".")) if kill else None,
            kill_signal=getattr(signal, "SIG" + os.environ.get("FMCTL_FAULT_KILL_SIGNAL", "KILL")),
            save_delay=float(os.environ.get("FMCTL_FAULT_SAVE_DELAY", "0") or 0),
            nonfinite_steps={int(s) for s in steps.split(",") if s.strip()},
            kill_target=os.environ.get("FMCTL_FAULT_KILL_TARGET", "self"),
        )

    def installed_in(self, folder: Any) -> "Faults":
        """Pause inside `folder`'s checkpoint saves (FMCTL_FAULT_SAVE_DELAY); returns self, the
        hooks to pass to fit(). `folder` is None on ranks other than 0, which write nothing."""
        if folder is not None:
            folder.save_pause = self.pause_in_save
        return self

    def on_batch(self, step: int, micro: int) -> None:
        self.maybe_kill(step, micro)

    def on_loss(self, loss: Any, attempt: int) -> Any:
        return loss * float("nan") if attempt in self.nonfinite_steps else loss

    def maybe_kill(self, step: int, micro: int) -> None:
        if self.kill_at == (step, micro):
            self.kill_at = None  # once
            if self.kill_target == "self":
                os.kill(os.getpid(), self.kill_signal)
                return
            if os.environ.get("RANK", "0") != "0":  # one signal, as a user or scheduler would send
                return
            launcher = int(os.environ["FMCTL_LAUNCHER"])
            if self.kill_target == "launcher-group":
                os.killpg(os.getpgid(launcher), self.kill_signal)
            else:
                os.kill(launcher, self.kill_signal)

    def pause_in_save(self) -> None:
        if self.save_delay:
            time.sleep(self.save_delay)
