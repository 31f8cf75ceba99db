"""Finish the built site for offline use (run by ``make html`` after ``jupyter-book build``).

1. sphinx-thebe (loaded by Jupyter Book 1 even with thebe off) adds its inline configuration
   script twice to every page, and the second ``const THEBE_JS_URL`` is a JavaScript error:
   keep the first copy only.
2. The widget manager (``_static/html-manager/embed-amd.js``) loads its icon fonts from
   ``@jupyter-widgets/html-manager/dist/`` (and the controls' CSS from ``@jupyter-widgets/``)
   relative to the *page*: copy them next to every page
   that embeds widgets, so the site needs no network (``make check-site`` fails on any local
   file that does not load).

Usage: python tools/postbuild_html.py book/_build/html
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")
THEBE = re.compile(r"\s*<script>const THEBE_JS_URL = [^<]*</script>")


def fix(root: Path) -> tuple[int, int]:
    fonts = [p for p in (root / "_static" / "html-manager").glob("*") if p.suffix in FONT_SUFFIXES]
    n_thebe, n_dirs = 0, set()
    for page in root.rglob("*.html"):
        if "_static" in page.parts:
            continue
        html = page.read_text(encoding="utf-8")
        hits = list(THEBE.finditer(html))
        if len(hits) > 1:
            for m in reversed(hits[1:]):
                html = html[:m.start()] + html[m.end():]
            page.write_text(html, encoding="utf-8")
            n_thebe += 1
        if "application/vnd.jupyter.widget-view+json" in html and fonts:
            if page.parent not in n_dirs:
                # the manager's own CSS asks in dist/, the controls' CSS one level up
                for dest in (page.parent / "@jupyter-widgets" / "html-manager" / "dist", page.parent / "@jupyter-widgets"):
                    dest.mkdir(parents=True, exist_ok=True)
                    for f in fonts:
                        shutil.copy2(f, dest / f.name)
                n_dirs.add(page.parent)
    return n_thebe, len(n_dirs)


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "book/_build/html")
    t, d = fix(root)
    print(f"postbuild: duplicate thebe script removed from {t} pages; widget fonts copied to {d} folder(s)")
