"""The single exception type for bad user input.

Every reader and preprocessing step raises :class:`InputError` with the offending file and
what to do about it, so notebooks and the runner can show a one-line message instead of a
raw traceback.
"""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: names the file (or object), what is wrong and how to fix it."""

    def __init__(self, what: str | Path | None, problem: str, fix: str = ""):
        self.what = str(what) if what is not None else None
        self.problem = problem
        self.fix = fix
        msg = f"{what}: {problem}" if what is not None else problem
        if fix:
            msg += f" Fix: {fix}"
        super().__init__(msg)
