"""helpers.report.page: warnings become path-free notes in the page (issue 34 item 3)."""
import warnings

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
