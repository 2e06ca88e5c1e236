import os

if os.environ.get("FMCTL_LAUNCHER") and "RANK" in os.environ:  # a rank started by fmctl's launcher
    from fmctl.loop.preemption import hold_signals_until_training

    hold_signals_until_training()  # first thing: a signal during imports must not kill the rank

from fmctl.cli import main  # noqa: E402

main()
