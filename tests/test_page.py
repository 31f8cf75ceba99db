"""helpers.report.page: warnings become path-free notes in the page (issue 34 item 3)."""
import warnings

import numpy as np

from helpers.report import page


def test_warnings_become_sentences_without_paths(monkeypatch, capsys):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    with warnings.catch_warnings():
        page.setup()
        warnings.warn("/work/x/data/demo/submissions/noisy/populations.txt: renormalised (sum 0.98)", UserWarning)
        warnings.warn("/work/x/data/demo/submissions/noisy/populations.txt: renormalised (sum 0.98)", UserWarning)
        warnings.warn("np.trapz is deprecated", DeprecationWarning)
        warnings.warn("contrast looks inverted", RuntimeWarning)
    assert page.NOTES == ["populations.txt: renormalised (sum 0.98).", "contrast looks inverted."]
    out = capsys.readouterr()
    assert "/work/" not in out.out + out.err and "UserWarning" not in out.out + out.err


def test_sentence_keeps_relative_paths_and_numbers():
    assert page.sentence("helpers/kernels/fsc.py: 0.5 Å  and   1/2") == "helpers/kernels/fsc.py: 0.5 Å and 1/2."
    assert page.sentence("done!") == "done!"


def test_submission_styles_are_unique_stable_and_never_the_gts(monkeypatch):
    """Issue 34 item 2: one colour per submission across a chapter's figures (a later call with a
    subset keeps each label's colour), no two of 20 submissions share colour and line style, the
    GT's black and the greys are never a submission's."""
    from matplotlib.colors import to_rgb

    from helpers.report import plots

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    page.setup()
    labels = [f"sub {i}" for i in range(20)]
    first = {lab: plots.line_style(lab) for lab in ["GT", *labels]}
    assert first["GT"] == {"color": "#000000", "linestyle": "-"}
    pairs = {(s["color"], s["linestyle"]) for lab, s in first.items() if lab != "GT"}
    assert len(pairs) == 20
    assert len({first[lab]["color"] for lab in labels[:15]}) == 15  # the first 15 differ by colour alone
    for lab in labels:
        r, g, b = to_rgb(first[lab]["color"])
        assert max(r, g, b) - min(r, g, b) > 0.1, (lab, first[lab])  # not black, white or grey
    assert plots.colors(labels[5:2:-1]) == {lab: first[lab]["color"] for lab in labels[5:2:-1]}
    page.setup()  # a new chapter: the order starts again from its first call
    assert plots.colors(["sub 7"]) == {"sub 7": plots.SUBMISSION_COLOURS[0]}


def _smallest_shown_px(fig, dpi):
    """The smallest visible text of ``fig`` in page pixels, measured from the renderer's boxes
    (the height of an "x"-height-free line is ~1.2 × the font size; we use the font size itself
    from the drawn text's own transform-free size) and the column's shrink factor."""
    from matplotlib.text import Text

    from helpers.report import plots

    fig.set_dpi(dpi)
    fig.canvas.draw()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    texts += [t for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
    shrink = min(1.0, plots.CONTENT_WIDTH_PX / (fig.get_size_inches()[0] * dpi))
    return min(t.get_fontsize() * dpi / 72 * shrink for t in texts)


def test_wide_figures_keep_text_at_least_10_px_on_the_page():
    """Issue 34 item 2: a 12-inch figure with 7-pt titles and 9-pt ticks is shown shrunk to the
    688-px column (7-pt → 5.7 px); after ``legible`` every text is ≥ 10 px there, text already
    large enough keeps its size, and a narrow figure's 12-pt title is untouched."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.report import plots

    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    for i, a in enumerate(axes):
        a.plot([0, 1], [0, 1], label="curve")
        a.set_title(f"panel {i}", fontsize=7)
        a.tick_params(labelsize=9)
    axes[0].legend(fontsize=6)
    fig.suptitle("big", fontsize=30)
    assert _smallest_shown_px(fig, 90) < 6
    plots.legible(fig, 90)
    assert _smallest_shown_px(fig, 90) >= 10 - 1e-3
    assert fig._suptitle.get_fontsize() == 30
    plt.close(fig)
    small, ax = plt.subplots(figsize=(5, 3))
    ax.set_title("t", fontsize=12)
    plots.legible(small, 90)
    assert ax.title.get_fontsize() == 12
    plt.close(small)
    # the grid of panels fits the column unshrunk
    grid, _, _ = plots.panel_grid([f"s{i}" for i in range(13)], panel=(3, 2.5))
    assert grid.get_size_inches()[0] * plots.DPI <= plots.CONTENT_WIDTH_PX + 1e-9
    plt.close(grid)


def test_the_chapter_kernel_shows_figures_legibly():
    """page.setup() wraps the inline backend's PNG output: in a real kernel a figure drawn with a
    5-pt title after setup() is shown with its title raised to 10.5 px (not when setup() is
    skipped: the control)."""
    import json

    import nbformat
    from nbclient import NotebookClient

    def run(with_setup):
        cells = ["from helpers.report import page\n" + ("page.setup()" if with_setup else ""),
                 "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(12, 3))\nax.set_title('t', fontsize=5)",
                 "import json; print(json.dumps(fig.axes[0].title.get_fontsize()))"]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
        return json.loads(nb.cells[2].outputs[0]["text"])

    from helpers.report import plots

    want = plots.MIN_TEXT_PX * 72 / plots.DPI * 12 * plots.DPI / plots.CONTENT_WIDTH_PX
    assert abs(run(True) - want) < 1e-6
    assert run(False) == 5


def test_coloured_table_cells_keep_text_contrast_above_4_5():
    """Issue 34 items 2/6: every cell colour of the rank tables (cividis, and a full grey ramp
    where the choice of ink is hardest) gets text at ≥ 4.5 : 1 (WCAG 2 contrast, computed here
    from the sRGB values independently of plots._luminance)."""
    import re

    import matplotlib.pyplot as plt
    import pandas as pd

    from helpers.report import plots

    def lum(hex_):
        rgb = [int(hex_[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    colours = [plt.get_cmap("cividis")(x) for x in np.linspace(0, 1, 101)] + [(g, g, g) for g in np.linspace(0, 1, 256)]
    worst = 9.0
    for c in colours:
        bg, fg = re.findall(r"#[0-9a-f]{6}", plots.cell_css(c))
        hi, lo = sorted((lum(bg), lum(fg)), reverse=True)
        worst = min(worst, (hi + 0.05) / (lo + 0.05))
    assert worst >= 4.5
    css = plots.gradient_css(pd.Series([3.0, np.nan, 1.0]))
    assert css[1] == "" and css[0] != css[2] and "#00224e" in css[2]  # the minimum gets cividis' darkest
