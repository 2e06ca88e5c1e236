"""Stop cleanly when the job is told to: SIGTERM (schedulers, `kill`) or Ctrl-C.

The first signal asks the loop to finish the optimizer step it is in, write a checkpoint
and exit with PREEMPTED_EXIT; a second Ctrl-C exits at once.

Under `trainer.nproc=N` fmctl's launcher (`fmctl/launch.py`) receives the signal and
forwards it to the ranks; it names itself in LAUNCHER_ENV so that ranks know someone
reads the outcome from the run folder.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "temporary failure, try again" — resume with trainer.resume=auto
LAUNCHER_ENV = "FMCTL_LAUNCHER"  # pid of the fmctl process that started torchrun, set in the ranks
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_held: list[str] = []  # a stop asked for before the training loop began, in a rank under the launcher


def is_main_rank() -> bool:
    """Rank 0 (or no torchrun): the one process that talks to the user."""
    return os.environ.get("RANK", "0") == "0"


def under_launcher() -> bool:
    """A rank that fmctl's launcher started (it reads the manifest and sets the exit status)."""
    return bool(os.environ.get(LAUNCHER_ENV)) and "RANK" in os.environ


def _announce(text: str) -> None:
    if is_main_rank():
        print(text, file=sys.stderr)


def _request_text(name: str) -> str:
    return f"{name}: finishing this step and writing a checkpoint (Ctrl-C again to exit now)"


def _exit_now(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def hold_signals_until_training() -> None:
    """In a rank under the launcher, keep a signal that comes during start-up for the
    training loop (which then stops after its first step, with a checkpoint): dying
    mid-setup would read to torchrun as a crash. A second signal still exits at once."""
    def hold(signum: int, frame: Any) -> None:
        if _held:
            _exit_now(signum)
        _held.append(signal.Signals(signum).name)
        _announce(_request_text(_held[0]))

    for sig in STOP_SIGNALS:
        signal.signal(sig, hold)


class StopRequest:
    def __init__(self, announce: Any = None):
        self.requested: str | None = _held.pop() if _held else None
        self.announce = announce or _announce
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            self.__exit__()
            _exit_now(signum)
        self.requested = name
        self.announce(_request_text(name))

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def ignore_signals_in_worker(_: int) -> None:
    """DataLoader workers share the terminal's process group: leave the decision to stop
    to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
