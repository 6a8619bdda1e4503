# make demo: install into .venv, generate the demo genome, predict it with the demo model on a local Ray
#            cluster, validate the atlas and show how to read it.
# make test: install into .venv (with the test extra) and run the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build keeps installs small; for GPUs see the README (TORCH_SPEC / TORCH_INDEX_URL).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
DEMO_DIR ?= demo_out

.PHONY: install demo test lint bench clean real-data browser

# Torch first, from the pinned spec, so that no other requirement pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	# The Borzoi oracle (tests/test_borzoi.py); --no-deps: see the note in pyproject.toml's test extra.
	$(PY) -m pip install -q --no-deps borzoi-pytorch==0.5.1
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m enformer_batch.demo write $(DEMO_DIR)/genome.fa
	rm -rf $(DEMO_DIR)/atlas
	$(VENV)/bin/enformer-batch predict $(DEMO_DIR)/genome.fa --out $(DEMO_DIR)/atlas
	$(VENV)/bin/enformer-batch validate $(DEMO_DIR)/atlas --fasta $(DEMO_DIR)/genome.fa
	@$(PY) -m enformer_batch.demo show $(DEMO_DIR)/atlas

# Real genome and VCFs (GRCh37 chr20, 1000 Genomes) from Debian's registry; tests that need them say so if
# they cannot be had.
real-data:
	PYTHON=$(PY) bash tools/fetch_real_data.sh .real-data || true

# The serve page's browser test (tests/test_serve.py) drives Debian's chromium and chromium-driver: installed
# here where this runs as root (CI); elsewhere it says how, and the test is skipped (never on CI).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "make browser: no chromium/chromedriver; the browser test is skipped. Enable it with" \
		"'sudo apt-get install chromium chromium-driver' (Debian/Ubuntu) or 'sudo make browser'."; fi

test: $(VENV)/.installed-test real-data browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

bench: $(VENV)/.installed-test
	$(PY) benchmarks/pipeline.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
