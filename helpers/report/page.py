"""A chapter page's set-up: the figure style, and warnings shown as sentences instead of Python's
``path:line: UserWarning: …`` lines (which leak the build machine's paths into the book).

:func:`setup` is the first call of every chapter. From then on a warning raised while a cell runs
is shown in the page as a short note, "**Note.** <message>", with no file path; warnings from
other libraries about their own future (``DeprecationWarning``, ``FutureWarning``,
``PendingDeprecationWarning``) are dropped, as they say nothing about the data. The notes are
also kept in :data:`NOTES` so that a chapter can list them again in its conclusions.
"""
from __future__ import annotations

import re
import warnings

NOTES: list[str] = []
LIBRARY_NOISE = (DeprecationWarning, FutureWarning, PendingDeprecationWarning)
_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/)+([\w.-]+)")


def sentence(message) -> str:
    """A warning's text as a sentence for the page: absolute paths shortened to their last
    component, whitespace collapsed, a final full stop."""
    text = " ".join(_PATH.sub(r"\1", str(message)).split())
    return text if text.endswith((".", "!", "?")) else text + "."


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, LIBRARY_NOISE):
        return
    text = sentence(message)
    if text in NOTES:
        return
    NOTES.append(text)
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"**Note.** {text}"))
    except ImportError:  # outside IPython: a plain line on stderr, still without the path
        import sys

        print(f"Note. {text}", file=sys.stderr)


def setup() -> None:
    """Figure style + warnings as notes (call once at the top of a chapter)."""
    from helpers.report import plots

    plots.set_style()
    plots._SEEN.clear()
    NOTES.clear()
    warnings.showwarning = _show
    warnings.simplefilter("default")  # each distinct warning once per location, not once per loop iteration
