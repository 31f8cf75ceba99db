"""Check the built book offline in headless Chromium (``make check-site``).

For every HTML page of the site, at a laptop-sized 1280 × 800 viewport: load it from disk with
every non-``file:`` request aborted (proving the page needs no network), require no notebook
error output, no JavaScript error or console error, no failed local request (a missing font,
script or image), and no horizontal scrollbar in the page or in any block of the main column
(a table or figure wider than the text); save a full-page screenshot to
``<site>/../screens/<page>.png`` for a human to look through; then move every slider and
dropdown of every ipywidget and require the picture to change (screenshot of the widget before
vs after). Needs Debian's ``chromium`` and the ``playwright``
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
