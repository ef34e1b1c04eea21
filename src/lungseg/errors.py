"""Project exceptions: every message names the file or case and the problem."""

from __future__ import annotations


class LungsegError(Exception):
    """Base class for errors shown to the user as one line (no traceback)."""


class ConfigError(LungsegError):
    """A bad ``params.yaml`` key or value."""


class CaseError(LungsegError):
    """A problem with one input case (file, series, structure set).

    Args:
        case: Case identifier or file path that is at fault.
        problem: What is wrong, including the offending value where possible.
    """

    def __init__(self, case: str, problem: str) -> None:
        self.case = case
        self.problem = problem
        super().__init__(f"{case}: {problem}")
