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


def _legible_inline_figures() -> None:
    """Pass every figure the kernel shows inline through :func:`helpers.report.plots.legible`
    (text ≥ 10 px once the page shrinks a wide figure): wraps the PNG formatter that the inline
    backend registered for ``Figure``. Nothing happens outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from helpers.report import plots

    plt.switch_backend(matplotlib.get_backend())  # load the backend now: it registers its formatter first
    fmt = ip.display_formatter.formatters["image/png"]
    try:
        old = fmt.lookup_by_type(Figure)
    except KeyError:
        return
    if getattr(old, "legible", False):
        return

    def png(fig):
        return old(plots.legible(fig))
    png.legible = True
    fmt.for_type(Figure, png)


def setup() -> None:
    """Figure style + warnings as notes (call once at the top of a chapter)."""
    from helpers.report import plots

    plots.set_style()
    _legible_inline_figures()
    plots._SEEN.clear()
    NOTES.clear()
    warnings.showwarning = _show
    warnings.simplefilter("default")  # each distinct warning once per location, not once per loop iteration
