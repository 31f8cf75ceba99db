"""tests/site_check.py's page rules on a synthetic two-page site (issue 34 item 6): a broken link
and anchor, text under 10 px, text under 4.5 : 1 contrast and an open code cell are each reported;
the clean page raises nothing. Skips without Chromium (``make check-site`` installs it)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def _site(root: Path, bad: bool) -> None:
    (root / "book/executed").mkdir(parents=True)
    links = '<a href="book/executed/a.html#ok">ok</a>' + (' <a href="missing.html">x</a> <a href="book/executed/a.html#nope">y</a>' if bad else "")
    (root / "index.html").write_text(f'<html><body><main><p style="font-size:16px;color:#222">Fine {links}</p></main></body></html>')
    body = ('<p style="font-size:8px">tiny words</p><p style="color:#aaa">faint words here</p>'
            '<div class="cell"><div class="cell_input"><pre>x = 1</pre></div></div>') if bad else ""
    (root / "book/executed/a.html").write_text(
        f'<html><body><main><h1 id="ok">A</h1>{body}<div class="cell_output"><img src="{PNG}"></div>'
        '<details class="hide above-input"><summary>Show code</summary><div class="cell_input"><pre>y = 2</pre></div></details>'
        '</main></body></html>')


def test_site_rules_find_each_problem_and_pass_a_clean_site(tmp_path):
    site_check = pytest.importorskip("site_check")
    pytest.importorskip("playwright")
    if not Path(site_check.CHROMIUM).exists():
        pytest.skip("chromium not installed")
    _site(tmp_path / "good", bad=False)
    assert site_check.check_site(tmp_path / "good") == []
    _site(tmp_path / "bad", bad=True)
    found = " | ".join(site_check.check_site(tmp_path / "bad"))
    for words in ("missing.html (no such file)", "#nope (no such anchor)", '8px text "tiny words"',
                  'contrast 2.3:1 "faint words here"', "1 code cells shown open"):
        assert words in found, (words, found)
