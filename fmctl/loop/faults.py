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
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
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
