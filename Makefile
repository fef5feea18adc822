# Two commands do everything on a fresh Debian/Ubuntu machine (root or sudo):
#   make demo   set-up, then the whole pipeline on the generated demo data
#   make test   set-up, then the test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
LUIGI := $(VENV)/bin/luigi
WORKERS ?= 1

.PHONY: setup demo test bench clean-workspace

setup:
	@bash scripts/setup.sh

demo: setup
	@source scripts/env.sh && $(PY) -m pipeline.demo --workers $(WORKERS)

test: setup
	@source scripts/env.sh && $(VENV)/bin/ruff check . && $(PY) -m pytest -q tests

bench: setup
	@source scripts/env.sh && for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-workspace:
	rm -rf workspace
