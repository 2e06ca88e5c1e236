"""fmctl's torchrun launcher stands between the user's signals and the ranks.

`fmctl finetune --nproc N` re-runs the same command under torchrun; this module runs
torchrun in a session of its own and forwards a stop request to the ranks, so they
checkpoint and exit cleanly, and makes sure nothing is left running when it ends.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def supervise(command: list[str], run_dir: Path) -> int:
    """Run torchrun in a session of its own and stand between it and the signals.

    A signal to torchrun makes it print a traceback and kill the ranks after a timeout, and
    a launcher that just dies leaves torchrun and the ranks training with nobody waiting
    for them. So the launcher takes SIGTERM, SIGINT (and SIGHUP, as SIGTERM) itself, for
    itself or for its whole process group, and forwards the first to the ranks, which
    finish the step, checkpoint and exit 0 (torchrun then has nothing to report); the
    manifest saying `preempted` turns that into PREEMPTED_EXIT here. A second signal ends
    torchrun and the ranks at once."""
    import signal
    import subprocess

    from fmctl.loop.preemption import LAUNCHER_ENV, PREEMPTED_EXIT

    received: list[int] = []

    def take(signum: int, frame: Any) -> None:
        received.append(signal.SIGTERM if signum == signal.SIGHUP else signum)

    caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, take) for sig in caught}
    try:
        proc = subprocess.Popen(command, env={**os.environ, LAUNCHER_ENV: str(os.getpid())},
                                start_new_session=True, preexec_fn=_die_with_parent)
        told: set[int] = set()  # ranks the first signal has reached
        while True:
            try:
                code = proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if len(received) >= 2:
                return _stop_now(proc, received[1])
            if received and not Path("/proc").is_dir():  # no way to find the ranks: torchrun passes it on
                if not told:
                    _signal(-proc.pid, received[0])
                    told.add(proc.pid)
            elif received:  # ranks that start after the signal get it too (they hold it until training)
                for pid in set(_children(proc.pid)) - told:
                    _signal(pid, received[0])
                    told.add(pid)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0 and _manifest_status(run_dir) == "preempted":
        return PREEMPTED_EXIT
    if code < 0:  # torchrun itself was killed
        return 128 - code
    return code


def _stop_now(proc: Any, signum: int) -> int:
    """Second signal: end torchrun first (so it reports nothing), then pass the signal to
    the ranks, which exit at once; SIGKILL whatever is still there after a few seconds."""
    import signal

    ranks = _children(proc.pid)
    _signal(-proc.pid, signal.SIGKILL)  # torchrun's own group: the ranks have sessions of their own
    proc.wait()
    for pid in ranks:
        _signal(pid, signum)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in ranks:
        if _alive(pid):
            _signal(-pid, signal.SIGKILL)  # the rank and its DataLoader workers
    return 128 + signum  # rank 0 has said "fmctl: interrupted" (SIGINT) or nothing (SIGTERM), as one process does


def _die_with_parent() -> None:
    """In torchrun, before it starts: SIGTERM it if the launcher dies (even by SIGKILL), so
    the ranks are checkpointed and stopped rather than left running (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    """The processes `pid` started (torchrun's ranks), from /proc."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return found


def _alive(pid: int) -> bool:
    """Running, and not a zombie (nobody may reap the ranks of a killed torchrun)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _manifest_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
