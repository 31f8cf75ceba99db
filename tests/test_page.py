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
