"""Check the built book offline in headless Chromium (``make check-site``).

For every HTML page of the site, at a laptop-sized 1280 × 800 viewport: load it from disk with
every non-``file:`` request aborted (proving the page needs no network), require no notebook
error output, no JavaScript error or console error, no failed local request (a missing font,
script or image), and no horizontal scrollbar in the page or in any block of the main column
(a table or figure wider than the text); save a full-page screenshot to
``<site>/../screens/<page>.png`` for a human to look through; then move every slider and
dropdown of every ipywidget and require the picture to change (screenshot of the widget before
vs after). Also, for every page: each code cell of a chapter is collapsed (the reader sees outputs,
the code is one click away); every visible piece of text is ≥ 10 px with a contrast ≥ 4.5 : 1
against its background (WCAG AA); every local link leads to a file and anchor that exist; and
no page holds a leftover of the build machine (``tools/postbuild_html.leftovers``: a warning, a
traceback, an absolute path). Needs Debian's ``chromium`` and the ``playwright``
Python package (which drives the system browser; it never downloads one).

Usage: python tests/site_check.py [book/_build/html]
"""
from __future__ import annotations

import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


# Elements of the page (or of its main column) that scroll sideways: the document itself, or a
# block whose content is wider than its box and that shows a scrollbar for it.
WIDE_JS = """() => {
  const out = [];
  const doc = document.scrollingElement || document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) out.push(`page (${doc.scrollWidth}px > ${window.innerWidth}px)`);
  const main = document.querySelector('main') || document.body;
  for (const el of main.querySelectorAll('*')) {
    const st = getComputedStyle(el);
    if (!['auto', 'scroll'].includes(st.overflowX)) continue;
    if (el.scrollWidth > el.clientWidth + 1 && el.offsetParent !== null) {
      const what = el.querySelector('table') ? 'table' : el.querySelector('img') ? 'figure' : el.tagName.toLowerCase();
      out.push(`${what} ${el.scrollWidth}px in ${el.clientWidth}px`);
    }
  }
  return out;
}"""


# Visible text smaller than 10 px, or with a contrast below 4.5 : 1 against the first opaque
# background behind it (WCAG 2 relative luminance); one entry per offending element, capped.
TEXT_JS = """() => {
  const lum = c => { const m = c.match(/[\\d.]+/g); if (!m) return null;
    const [r, g, b] = m.slice(0, 3).map(v => { v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const alpha = c => { const m = c.match(/[\\d.]+/g); return m && m.length > 3 ? parseFloat(m[3]) : 1; };
  const bg = el => { for (let e = el; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
    if (alpha(c) > 0.5) return c; } return 'rgb(255, 255, 255)'; };
  const out = [];
  const main = document.querySelector('main') || document.body;
  for (const el of main.querySelectorAll('*')) {
    if (el.offsetParent === null || el.closest('details:not([open]) > :not(summary)')) continue;
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim().length > 1);
    if (!own) continue;
    const st = getComputedStyle(el);
    const size = parseFloat(st.fontSize);
    const a = lum(st.color), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const text = el.textContent.trim().slice(0, 30);
    if (size < 10) out.push(`${size}px text "${text}"`);
    else if (alpha(st.color) > 0.5 && ratio < 4.5) out.push(`contrast ${ratio.toFixed(1)}:1 "${text}"`);
    if (out.length >= 5) break;
  }
  return out;
}"""

# Code inputs a reader sees without opening them (chapters collapse every code cell).
OPEN_CODE_JS = """() => [...document.querySelectorAll('.cell_input')].filter(e =>
    e.offsetParent !== null && !e.closest('details:not([open])')).length"""


def broken_links(root: Path) -> list[str]:
    """``page: href`` for every local link whose file or anchor does not exist."""
    import re
    from urllib.parse import unquote, urlsplit

    ids: dict = {}
    out = []
    for page in sorted(root.rglob("*.html")):
        if "_static" in page.parts:
            continue
        html = page.read_text(encoding="utf-8")
        for href in re.findall(r'<a\s[^>]*?href="([^"]+)"', html):
            u = urlsplit(href)
            if u.scheme or href.startswith(("mailto:", "javascript:")) or "_sources" in u.path:
                continue
            target = (page.parent / unquote(u.path)).resolve() if u.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                out.append(f"{page.relative_to(root)}: {href} (no such file)")
                continue
            if u.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = set(re.findall(r'\sid="([^"]+)"', target.read_text(encoding="utf-8")))
                if unquote(u.fragment) not in ids[target]:
                    out.append(f"{page.relative_to(root)}: {href} (no such anchor)")
    return out


def check_site(root: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.parts and p.name not in ("genindex.html", "search.html"))
    # a page from a hidden folder (a virtual environment's README, licences …) means _config.yml
    # does not exclude that folder: the cryoDRGN environment once added ~100 such pages
    stray = [p for p in pages if any(part.startswith(".") for part in p.relative_to(root).parts)]
    problems += [f"{p.relative_to(root)}: built from a hidden folder (add it to exclude_patterns in _config.yml)"
                 for p in stray[:5]] + ([f"… and {len(stray) - 5} more such pages"] if len(stray) > 5 else [])
    pages = [p for p in pages if p not in stray]
    problems += broken_links(root)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from postbuild_html import leftovers

    problems += leftovers(root, Path(__file__).resolve().parents[1])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for path in pages:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            external, errors, failed = [], [], []
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else (external.append(r.request.url), r.abort())[1])
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "net::ERR_FAILED" not in m.text else None)
            page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith("file:") else None)
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_timeout(1500)
            name = str(path.relative_to(root))
            if external:
                problems.append(f"{name}: external requests {external[:3]}")
            if errors:
                problems.append(f"{name}: JavaScript/console errors {errors[:3]}")
            if failed:
                problems.append(f"{name}: local files that do not load {[u.rsplit('/', 1)[-1] for u in failed[:4]]}")
            bad_text = page.evaluate(TEXT_JS)
            if bad_text:
                problems.append(f"{name}: text too small or too faint {bad_text}")
            if "executed" in path.parts and page.evaluate(OPEN_CODE_JS):
                problems.append(f"{name}: {page.evaluate(OPEN_CODE_JS)} code cells shown open (tag them hide-input)")
            wide = page.evaluate(WIDE_JS)
            if wide:
                problems.append(f"{name}: horizontal scrollbar in {wide[:3]}")
            shot = root.parent / "screens" / (name.replace("/", "__")[:-5] + ".png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            if page.locator(".output.traceback, .output.error").count():
                problems.append(f"{name}: a cell shows an error")
            # every chapter shows static figures, and each one actually loads
            figs = page.locator(".cell_output img")
            n_fig = figs.count()
            broken = sum(1 for i in range(n_fig) if not figs.nth(i).evaluate("e => e.complete && e.naturalWidth > 0"))
            if "executed" in path.parts and n_fig == 0:
                problems.append(f"{name}: no figures")
            if broken:
                problems.append(f"{name}: {broken} of {n_fig} figures do not load")
            n_views = page.locator("script[type='application/vnd.jupyter.widget-view+json']").count()
            if n_views:
                page.wait_for_selector(".widget-slider, .widget-dropdown", timeout=15000)
            sliders = page.locator(".widget-slider")
            for i in range(sliders.count()):
                if not sliders.nth(i).is_visible():  # inside a Stack page that is not shown
                    continue
                box = sliders.nth(i).locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
                before = box.screenshot()
                handle = sliders.nth(i).locator(".noUi-handle, .slider-handle, [role=slider]").first
                handle.focus()
                for _ in range(3):
                    handle.press("ArrowRight")
                page.wait_for_timeout(300)
                if box.screenshot() == before:
                    problems.append(f"{name}: slider {i} did not change the picture")
            dropdowns = page.locator(".widget-dropdown select")
            for i in range(dropdowns.count()):
                sel = dropdowns.nth(i)
                if not sel.is_visible() or sel.locator("option").count() < 2:
                    continue
                box = sel.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
                before = box.screenshot()
                sel.select_option(index=1)
                page.wait_for_timeout(300)
                if box.screenshot() == before:
                    problems.append(f"{name}: dropdown {i} did not change the picture")
            print(f"{name}: {n_fig} figures, {sliders.count()} sliders, {dropdowns.count()} dropdowns checked", flush=True)
            page.close()
        browser.close()
    return problems


def main(argv):
    root = Path(argv[1] if len(argv) > 1 else "book/_build/html").resolve()
    if not (root / "index.html").exists():
        print(f"no built site at {root}: run `make book` first", file=sys.stderr)
        return 2
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    problems = check_site(root)
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    print("site OK" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
