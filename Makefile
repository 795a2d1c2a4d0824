# QVL Studio. Two commands on a fresh Linux machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
MODEL ?=
ARGS ?=
TINY := .cache/tiny-qwen2_5_vl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run demo test test-fast lint bench browser clean help

help:
	@echo "make run    - install, then launch the app with the default model (MODEL=... to choose)"
	@echo "make demo   - install, then launch on a tiny random-weight checkpoint (no GPU, no download)"
	@echo "make test   - install (plus headless Chromium), then run the whole test suite"
	@echo "make lint   - ruff";  echo "make bench  - benchmarks (see BENCHMARKS.md)"

$(VENV)/.app-installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.app-installed requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

run: $(VENV)/.app-installed
	$(PY) app.py $(if $(MODEL),--model $(MODEL)) $(ARGS)

$(TINY)/config.json: $(VENV)/.app-installed qvl_core/tiny.py
	$(PY) -m qvl_core.tiny $(TINY) --family qwen2_5_vl

demo: $(TINY)/config.json
	$(PY) app.py --model $(TINY) --device cpu $(ARGS)

# Debian's Chromium for the real-browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

test: $(VENV)/.dev-installed browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(ARGS)

# Pure functions and the model classes on tiny checkpoints: no launched app, no child process, no browser.
test-fast: $(VENV)/.dev-installed
	$(PY) -m pytest -m "not app and not browser" $(ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.dev-installed
	$(PY) bench/generation.py $(ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
