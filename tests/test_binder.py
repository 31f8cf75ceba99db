"""Launch buttons (issue 34 item 4): the repository is named once in _config.yml, Binder is on,
each chapter's button is pointed at notebooks/NN_*.ipynb, and the Binder start-up makes those
notebooks and the demo data without cryoDRGN."""
import os
import sys

import pytest
import yaml

from helpers.core.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))


def test_config_names_the_repository_once_and_turns_binder_on():
    text = (REPO_ROOT / "_config.yml").read_text()
    cfg = yaml.safe_load(text)
    url = cfg["repository"]["url"]
    assert url.startswith("https://github.com/") and text.count(url) == 1
    assert cfg["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert cfg["html"].get("use_download_button", True) is True
    assert os.access(REPO_ROOT / "postBuild", os.X_OK) and "tools/binder_setup.py" in (REPO_ROOT / "postBuild").read_text()


def test_binder_links_point_at_the_text_notebooks():
    from postbuild_html import fix_binder_links

    html = ('<a href="https://mybinder.org/v2/gh/hetbook/hetbook/main?urlpath=lab/tree/book/executed/03_volume_metrics.ipynb">'
            '<a href="book/executed/03_volume_metrics.ipynb">')  # the download link is left alone
    out, n = fix_binder_links(html)
    assert n == 1 and "lab/tree/notebooks/03_volume_metrics.ipynb" in out
    assert '<a href="book/executed/03_volume_metrics.ipynb">' in out


def test_binder_setup_writes_every_chapter_and_drops_only_cryodrgn(tmp_path):
    import jupytext
    from binder_setup import binder_dataset, notebooks_to_ipynb

    from helpers.pipeline.params import load_params

    written = notebooks_to_ipynb(REPO_ROOT / "notebooks", tmp_path)
    stems = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in written] == stems
    nb = jupytext.read(written[0])
    assert "parameters" in nb.cells[0].metadata.get("tags", [])
    cfg = load_params(REPO_ROOT / "params/demo.yml")
    ds = binder_dataset(cfg)["dataset"]
    assert "cryodrgn" in cfg["dataset"] and "cryodrgn" not in ds
    assert {k: v for k, v in cfg["dataset"].items() if k != "cryodrgn"} == ds
    with pytest.raises(KeyError):
        binder_dataset(cfg)["dataset"]["cryodrgn"]


def test_a_page_with_a_warning_or_a_machine_path_fails_the_build(tmp_path):
    """tools/postbuild_html.py lists leftovers of the build machine (issue 34 item 3); a clean page,
    a path inside a code listing of the book's own text (``helpers/kernels/fsc.py``) and a URL pass."""
    from postbuild_html import leftovers

    ok = '<p>see <code>helpers/kernels/fsc.py</code> and https://mybinder.org/v2/gh/x/y</p><script>var a="/tmp/x";</script>'
    (tmp_path / "ok.html").write_text(ok)
    assert leftovers(tmp_path, REPO_ROOT) == []
    bad = {"w.html": "<pre>/x/helpers/kernels/preprocess.py:70: UserWarning: inverted contrast</pre>",
           "p.html": f"<pre>{REPO_ROOT}/results/demo/x.csv</pre>",
           "s.html": "<pre>/usr/lib/python3/site-packages/pot/x.py</pre>",
           "k.html": "<pre>[IPKernelApp] WARNING | Kernel is running over TCP</pre>",
           "t.html": "<pre>/tmp/tmpab12/kernel.json</pre>"}
    for name, html in bad.items():
        (tmp_path / name).write_text(html)
    found = leftovers(tmp_path, REPO_ROOT)
    assert sorted({f.split(":")[0] for f in found}) == sorted(bad)
