"""Finish the built site for offline use (run by ``make html`` after ``jupyter-book build``).

1. sphinx-thebe (loaded by Jupyter Book 1 even with thebe off) adds its inline configuration
   script twice to every page, and the second ``const THEBE_JS_URL`` is a JavaScript error:
   keep the first copy only.
2. The widget manager (``_static/html-manager/embed-amd.js``) loads its icon fonts from
   ``@jupyter-widgets/html-manager/dist/`` (and the controls' CSS from ``@jupyter-widgets/``)
   relative to the *page*: copy them next to every page
   that embeds widgets, so the site needs no network (``make check-site`` fails on any local
   file that does not load).
3. The Binder launch button of a chapter points at ``book/executed/NN_*.ipynb``, a build product
   that is not in the repository: point it at ``notebooks/NN_*.ipynb``, which the Binder start-up
   (``postBuild`` → ``tools/binder_setup.py``) makes from the text notebooks.

4. Leftovers of the build machine fail the build: a page whose text holds an absolute path of
   this machine (the repository, a home or temporary folder, site-packages), a Python warning
   (``SomethingWarning:``), a traceback or kernel noise is listed and the script exits 1
   (warnings that matter are sentences in the chapter, not printed warnings).

Usage: python tools/postbuild_html.py book/_build/html
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")
THEBE = re.compile(r"\s*<script>const THEBE_JS_URL = [^<]*</script>")
BINDER = re.compile(r"(https://mybinder\.org/v2/[^\"']*?)book/executed/(\d\d_[A-Za-z0-9_]+\.ipynb)")


def fix_binder_links(html: str) -> tuple[str, int]:
    """Binder URLs to an executed notebook → the same chapter under ``notebooks/``."""
    return BINDER.subn(r"\1notebooks/\2", html)


def fix(root: Path) -> tuple[int, int]:
    fonts = [p for p in (root / "_static" / "html-manager").glob("*") if p.suffix in FONT_SUFFIXES]
    n_thebe, n_dirs = 0, set()
    for page in root.rglob("*.html"):
        if "_static" in page.parts:
            continue
        html = page.read_text(encoding="utf-8")
        html, n_links = fix_binder_links(html)
        if n_links:
            page.write_text(html, encoding="utf-8")
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


LEFTOVERS = [
    (re.compile(r"\b[A-Z][A-Za-z]*Warning: "), "a Python warning"),
    (re.compile(r"Traceback \(most recent call last\)"), "a traceback"),
    (re.compile(r"/(?:site|dist)-packages/"), "a path into the Python installation"),
    (re.compile(r"(?<![\w.])/(?:tmp|home|root|Users|work)/[\w.-]+"), "an absolute path of the build machine"),
    (re.compile(r"\[IPKernelApp\]|Kernel is running over TCP"), "kernel noise"),
]


def page_text(html: str) -> str:
    """The visible text of a page: scripts, styles and tags dropped, entities kept as written."""
    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html)
    return re.sub(r"<[^>]+>", " ", html)


def leftovers(root: Path, repo: Path | None = None) -> list[str]:
    """``page: what (excerpt)`` for every leftover of the build machine in the site's pages."""
    pats = LEFTOVERS + ([(re.compile(re.escape(str(repo))), "the repository's absolute path")] if repo else [])
    out = []
    for page in sorted(root.rglob("*.html")):
        if "_static" in page.parts or "genindex" in page.name or "search" in page.name:
            continue
        text = page_text(page.read_text(encoding="utf-8"))
        for pat, what in pats:
            m = pat.search(text)
            if m:
                excerpt = " ".join(text[max(0, m.start() - 60):m.end() + 60].split())
                out.append(f"{page.relative_to(root)}: {what} (…{excerpt}…)")
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "book/_build/html")
    t, d = fix(root)
    print(f"postbuild: duplicate thebe script removed from {t} pages; widget fonts copied to {d} folder(s)")
    bad = leftovers(root, Path(__file__).resolve().parents[1])
    if bad:
        print(f"postbuild: {len(bad)} leftover(s) of the build machine in the pages:\n  " + "\n  ".join(bad),
              file=sys.stderr)
        sys.exit(1)
