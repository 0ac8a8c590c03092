# make test  : create .venv if missing, install rldb with its test extra (compiling the C core), run the suite
# make serve : create .venv if missing, install rldb, start a node on conf/standalone.json
# make bench : install the bench extra and run the benchmarks in bench/
# make jepsen: a Jepsen-style run of real nodes under faults (root; see tools/jepsen/README.md)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
BUILD_INPUTS := pyproject.toml setup.py csrc $(wildcard csrc/*.c csrc/*.h csrc/*.py) rldb/_version.py
PYTEST_ARGS ?=
BENCH_ARGS ?=
JEPSEN_SEED ?= 1
JEPSEN_DURATION ?= 150
JEPSEN_OUT ?= data/jepsen/$(shell date +%Y%m%d-%H%M%S)
JEPSEN_ARGS ?=

.PHONY: test serve bench jepsen install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) $(BUILD_INPUTS)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install -e '.[bench]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

serve: $(VENV)/.installed
	$(VENV)/bin/rldb-server --config-path conf/standalone.json

bench: $(VENV)/.installed-bench
	$(PY) -m pytest bench $(BENCH_ARGS)

jepsen: $(VENV)/.installed-test
	$(PY) -m tools.jepsen --seed $(JEPSEN_SEED) --duration $(JEPSEN_DURATION) --out $(JEPSEN_OUT) $(JEPSEN_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info rldb/_rldb_core*.so rldb/_rldb_core.c
