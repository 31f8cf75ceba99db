"""Interactive widgets that keep working in the static HTML book (no kernel).

Only widgets linked in the browser survive without a kernel: a control ``jslink``-ed to the
``selected_index`` of a ``Stack`` of pre-rendered PNG ``Image`` widgets. Python callbacks
(``observe``, ``interact``) would not update the static page, so none are used here.
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt


def fig_to_png(fig, dpi: int = 80, tight: bool = True) -> bytes:
    """Render a matplotlib figure to PNG bytes (small text enlarged to ≥ 10 px on the page,
    :func:`helpers.report.plots.legible`) and close it. ``tight``: crop to the drawn content
    (``bbox_inches="tight"``, which draws the figure twice); pass False for a figure whose
    layout is already set (tight_layout or explicit margins): one draw, ~40 % faster."""
    from helpers.report.plots import legible

    legible(fig, dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def image_stack(frames: Sequence[bytes], width: str = "") -> W.Stack:
    """A Stack of PNG Image widgets (one per frame)."""
    return W.Stack([W.Image(value=f, format="png", layout=W.Layout(width=width) if width else W.Layout())
                    for f in frames], selected_index=0)


def slider_browser(frames: Sequence[bytes], description: str = "index", start: int = 0) -> W.VBox:
    """A slider that flips through pre-rendered frames (works in the static page)."""
    stack = image_stack(frames)
    stack.selected_index = start
    slider = W.IntSlider(value=start, min=0, max=len(frames) - 1, description=description,
                         continuous_update=True, layout=W.Layout(width="420px"))
    W.jslink((slider, "value"), (stack, "selected_index"))
    return W.VBox([slider, stack])


def dropdown_browser(options: Sequence[str], frames: Sequence[bytes], description: str = "show") -> W.VBox:
    """A dropdown that picks one of pre-rendered frames (works in the static page)."""
    stack = image_stack(frames)
    dd = W.Dropdown(options=[(o, i) for i, o in enumerate(options)], value=0, description=description)
    W.jslink((dd, "index"), (stack, "selected_index"))
    return W.VBox([dd, stack])


def render_frames(n: int, draw: Callable[[int], "plt.Figure"], dpi: int = 80, tight: bool = True) -> list[bytes]:
    """PNG frames from a function ``draw(i) -> Figure`` for i in range(n) (``tight``: see
    :func:`fig_to_png`)."""
    return [fig_to_png(draw(i), dpi, tight) for i in range(n)]


def map_frames(maps, voxel_size: float, index, title: Callable[[int], str], figsize=(6, 3), dpi: int = 80,
               small: bool = False) -> list[bytes]:
    """One PNG per map ``index[k]`` of ``maps`` (n, N, N, N): its central z-section and
    z-projection (axes in Å, :func:`helpers.report.plots.show_map`), titled ``title(k)``; ``small``:
    9-pt ticks and panel titles (10 px at 80 dpi) for a compact browser. Fixed margins instead of
    a tight bounding box: one draw per frame. The one map browser of the book."""
    import numpy as np

    from helpers.report.plots import show_map

    def draw(k):
        fig, ax = plt.subplots(1, 2, figsize=figsize)
        show_map(np.asarray(maps[index[k]]), voxel_size, axes=ax)
        fig.suptitle(title(k), fontsize=9 if small else None)
        if small:
            for a in ax:
                a.tick_params(labelsize=9)
                a.title.set_fontsize(9)
                a.xaxis.label.set_fontsize(9)
                a.yaxis.label.set_fontsize(9)
        fig.subplots_adjust(left=0.14, right=0.98, bottom=0.2, top=0.8, wspace=0.45)
        return fig
    return render_frames(len(index), draw, dpi=dpi, tight=False)


def two_level_browser(outer: Sequence[str], inner: Sequence[str], frame: Callable[[int, int], bytes],
                      outer_label: str = "metric", inner_label: str = "submission") -> W.VBox:
    """Pick an outer item (e.g. a metric) and an inner item (e.g. a submission); each outer
    item has its own inner dropdown. ``frame(i, j)`` returns the PNG for outer i, inner j."""
    pages = [dropdown_browser(inner, [frame(i, j) for j in range(len(inner))], inner_label)
             for i in range(len(outer))]
    stack = W.Stack(pages, selected_index=0)
    dd = W.Dropdown(options=[(o, i) for i, o in enumerate(outer)], value=0, description=outer_label)
    W.jslink((dd, "index"), (stack, "selected_index"))
    return W.VBox([dd, stack])


def nested_browser(outer: Sequence[str], frames: Sequence[Sequence[bytes]], outer_label: str = "submission",
                   inner_label: str = "map") -> W.VBox:
    """Pick an item with a dropdown, then flip through its own frames with a slider
    (e.g. a submission, then its maps along the series). Works in the static page."""
    pages = [slider_browser(fr, inner_label) for fr in frames]
    stack = W.Stack(pages, selected_index=0)
    dd = W.Dropdown(options=[(o, i) for i, o in enumerate(outer)], value=0, description=outer_label)
    W.jslink((dd, "index"), (stack, "selected_index"))
    return W.VBox([dd, stack])
