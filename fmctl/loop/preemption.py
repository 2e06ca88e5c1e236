"""Stop cleanly when the job is told to: SIGTERM (schedulers, `kill`) or Ctrl-C.

The first signal asks the loop to finish the optimizer step it is in, write a checkpoint
and exit with PREEMPTED_EXIT; a second Ctrl-C exits at once.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "temporary failure, try again" — resume with trainer.resume=auto


class StopRequest:
    def __init__(self, announce: Any = None):
        self.requested: str | None = None
        self.announce = announce or (lambda text: print(text, file=sys.stderr))
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.requested = name
        self.announce(f"{name}: finishing this step and writing a checkpoint (Ctrl-C again to exit now)")

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def ignore_signals_in_worker(_: int) -> None:
    """DataLoader workers share the terminal's process group: leave the decision to stop
    to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
