"""User-facing errors.

Every problem a user can fix (a bad key, a missing file, a corrupt image) is raised as an
`FmctlError`: the CLI prints its message on one line and exits non-zero without a
traceback. Anything else is a bug in fmctl and keeps its traceback under ``--debug``.
"""
from __future__ import annotations


class FmctlError(Exception):
    """A problem with the user's input, reported as one actionable line."""

    exit_code = 2

    def lines(self) -> list[str]:
        return [str(self)]


class ConfigError(FmctlError):
    """One or more problems in the composed configuration, each with its dotted key."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class DataError(FmctlError):
    """Unreadable, empty or inconsistent data: names the file, row or column."""


class ModelError(FmctlError):
    """A backbone or pretrained folder that cannot be built or loaded."""


class RunFolderError(FmctlError):
    """A run folder that would be clobbered, or that lacks what a verb needs."""


class ExportError(FmctlError):
    """An export that cannot be made or that does not compute what the model computes
    (parity above tolerance); nothing that looks valid is left behind."""
