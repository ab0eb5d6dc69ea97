# databite-stream — every target installs what it needs (venv, packages, Kafka jars).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed


.PHONY: help venv kafka-jars browser lint typecheck test test-fast test-faults demo bench bench-full topics clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "databite-stream needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,rocksdb]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the package with its dev tools

kafka-jars: $(STAMP)  ## resolve the Apache Kafka broker jars from Maven Central (cached in .kafka/)
	$(PY) -m databite_stream.devkafka fetch

browser:  ## Debian's chromium for the dashboard test (apt; root or sudo)
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

lint: $(STAMP)  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)  ## mypy (strict)
	$(VENV)/bin/mypy

test: kafka-jars browser lint typecheck  ## lint, types, and every test (real local Kafka, real chromium)
	$(PY) -m pytest

test-faults: kafka-jars  ## only the fault-injection suite
	$(PY) -m pytest -m faults

demo: kafka-jars  ## the main job: local Kafka + fake third-party API + a worker + live results
	$(PY) -m databite_stream.cli demo

bench: kafka-jars  ## benchmarks, quick profile (< 10 min): tables in benchmarks/results/
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,rocksdb,bench]'
	$(PY) benchmarks/run_all.py --quick

bench-full: kafka-jars  ## benchmarks, full profile (~45 min: the heavy precision cases run 3 times each)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,rocksdb,bench]'
	$(PY) benchmarks/run_all.py

clean:  ## remove the venv, caches and local Kafka data (keeps nothing)
	rm -rf $(VENV) .kafka .mypy_cache .ruff_cache .pytest_cache .hypothesis
