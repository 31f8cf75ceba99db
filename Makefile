# hetbook: `make book` builds the whole book on the demo data, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
CRYODRGN_VENV := .venv-cryodrgn
PY     := $(VENV)/bin/python
PARAMS ?= params/demo.yml

.PHONY: book notebooks html test check-site data vendor bench bench-scale clean-book cryodrgn recovar

# uv (from PyPI, ~3 s) installs the same pinned versions as pip in ~30 s where pip took ~100 s on
# 2 cores (benchmarks/RESULTS.md); pip is the fallback if uv cannot be had. Bytecode is compiled
# at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (this machine, CI) nothing would
# ever cache it, and every kernel and cryoDRGN command would compile torch again (cryoDRGN's
# start-up: 16 s against 9 s). uv does not read pip's configuration, so a local wheel folder pip is
# told about (PIP_FIND_LINKS or pip's own config: e.g. a CPU torch wheel) is passed on.
UV     := $(VENV)/bin/uv
FIND_LINKS = $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_PIP  = $(UV) pip install --quiet --compile-bytecode $(if $(FIND_LINKS),--find-links $(FIND_LINKS))

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install --quiet --quiet uv && $(UV_PIP) --python $(PY) -r requirements.txt ) || \
	  ( $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -r requirements.txt )
	test -x $(UV) && $(UV_PIP) --python $(PY) --no-deps -e . || $(PY) -m pip install --quiet --no-deps -e .
	touch $@

# MathJax, require.js and the widget manager served from the site itself (no CDN).
_vendor/.done:
	mkdir -p .npm-vendor _vendor
	cd .npm-vendor && npm install --silent --no-audit --no-fund @jupyter-widgets/html-manager@1 requirejs@2 mathjax@3
	mkdir -p _vendor/html-manager
	cp -r .npm-vendor/node_modules/@jupyter-widgets/html-manager/dist/* _vendor/html-manager/
	cp .npm-vendor/node_modules/requirejs/require.js _vendor/require.js
	rm -rf _vendor/mathjax && cp -r .npm-vendor/node_modules/mathjax/es5 _vendor/mathjax
	touch $@

vendor: _vendor/.done

data: $(VENV)/.installed $(CRYODRGN_VENV)/.installed
	$(PY) -c "from helpers.pipeline.params import load_params; from helpers.pipeline.demo_data import ensure_data; ensure_data(load_params('$(PARAMS)'))"

notebooks: $(VENV)/.installed $(CRYODRGN_VENV)/.installed
	$(VENV)/bin/hetbook run --params $(PARAMS)

html: $(VENV)/.installed _vendor/.done
	$(VENV)/bin/hetbook status --params $(PARAMS)
	rm -rf book/_build/html
	$(VENV)/bin/jupyter-book build . --path-output book --keep-going
	$(PY) tools/postbuild_html.py book/_build/html
	@echo "book: $(CURDIR)/book/_build/html/index.html"

# cryoDRGN's environment and the npm assets side by side (make -j2; the data beside them too was
# slower on 2 cores: both are CPU-bound), then the chapters and the HTML
book:
	$(MAKE) --no-print-directory -j2 $(CRYODRGN_VENV)/.installed _vendor/.done
	$(MAKE) --no-print-directory notebooks html

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 tests

check-site: $(VENV)/.installed
	test -x /usr/bin/chromium || (apt-get install -y chromium || sudo apt-get install -y chromium)
	$(PY) tests/site_check.py book/_build/html

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_volume_metrics.py
	$(PY) benchmarks/bench_image_search.py
	$(PY) benchmarks/bench_transport.py
	$(PY) benchmarks/bench_per_image.py

# challenge scale on a synthetic memory-mapped GT: chapter 3's single pass and chapter 4's GT work
# against the I/O floor, then every chapter on a challenge-layout folder (wall time, peak memory)
# (ARGS="--n-gt 3861 --box 224" for the challenge's size: 174 GB of disk)
bench-scale: $(VENV)/.installed
	$(PY) benchmarks/bench_scale.py $(ARGS)
	$(PY) benchmarks/bench_book_scale.py $(ARGS)

# cryoDRGN in its own environment, sharing the main environment's packages (torch, numpy, pandas,
# …) through a .pth file, so that only cryoDRGN and what it adds (jupyterlab, umap, healpy, plotly,
# …: the packages uv would add to .venv, none of them replacing one there) are installed: ~20 s
# here against ~55 s for a whole second copy of torch (1.8 GB, compiled again). pip is the
# fallback (~80 s). The demo book trains it on the particles (params/demo.yml: dataset.cryodrgn);
# the tests use it where present.
CRYODRGN := cryodrgn==4.3.1
$(CRYODRGN_VENV)/.installed: $(VENV)/.installed
	rm -rf $(CRYODRGN_VENV)
	$(PYTHON) -m venv $(CRYODRGN_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
	  "$$($(CRYODRGN_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_hetbook_main_venv.pth"
	( test -x $(UV) && $(UV) pip install --dry-run $(if $(FIND_LINKS),--find-links $(FIND_LINKS)) \
	    --python $(PY) $(CRYODRGN) > $(CRYODRGN_VENV)/dry-run.txt 2>&1 && ! grep -q '^ - ' $(CRYODRGN_VENV)/dry-run.txt && \
	  sed -n 's/^ + //p' $(CRYODRGN_VENV)/dry-run.txt > $(CRYODRGN_VENV)/adds.txt && grep -q '^cryodrgn==' $(CRYODRGN_VENV)/adds.txt && \
	  $(UV_PIP) --no-deps --python $(CRYODRGN_VENV)/bin/python -r $(CRYODRGN_VENV)/adds.txt ) || \
	  $(CRYODRGN_VENV)/bin/python -m pip install --quiet torch==2.13.0 $(CRYODRGN)
	$(CRYODRGN_VENV)/bin/cryodrgn --version
	touch $@

cryodrgn: $(CRYODRGN_VENV)/.installed

# RECOVAR (Gilles & Singer) in its own environment: its pins are its own (jax 0.9.0.1 on CPU,
# numpy < 2.3), none shared with .venv. uv first, pip the fallback. Not in `make book` by default;
# params/demo_recovar.yml runs it on the demo particles (dataset.recovar).
RECOVAR_VENV := .venv-recovar
$(RECOVAR_VENV)/.installed: $(VENV)/.installed
	rm -rf $(RECOVAR_VENV)
	$(PYTHON) -m venv $(RECOVAR_VENV)
	test -x $(UV) && $(UV_PIP) --python $(RECOVAR_VENV)/bin/python recovar==1.0.5 || ( \
	  $(RECOVAR_VENV)/bin/python -m pip install --quiet --upgrade pip && \
	  $(RECOVAR_VENV)/bin/python -m pip install --quiet recovar==1.0.5 )
	$(RECOVAR_VENV)/bin/recovar pipeline --help > /dev/null
	touch $@

recovar: $(RECOVAR_VENV)/.installed

clean-book:
	rm -rf book/_build book/executed
