# fastwsrpc developer commands. Everything runs in .venv, made on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fastwsrpc-installed
PYTEST := $(BIN)/pytest -p no:cacheprovider

.PHONY: help install demo test bench bench-baseline bench-gate compare lint docs clean

# `make` alone lists the targets (rather than quietly making a .venv).
help:
	@echo "make demo     make .venv, install, run a demo server and call it both ways"
	@echo "make test     the whole suite (uses redis-server, nats-server, Chromium, Node if present)"
	@echo "make install  .venv with fastwsrpc installed editable, compiled hot path built in place"
	@echo "make docs     the documentation site into site/ (Python 3.10+)"
	@echo "make lint     ruff and mypy, pinned"
	@echo "make bench    micro benchmarks; make compare: end to end against other servers"
	@echo "make bench-baseline, then make bench-gate: fail when a benchmark got slower (docs/guide/benchmarks.md)"
	@echo "make clean    remove build products"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Editable install builds the compiled speedups in place when a C compiler is
# there (and warns, then carries on with the pure twin, when it is not: setup.py's
# warning says why; the check below says it again for a pip too old to relay it).
$(STAMP): $(BIN)/python pyproject.toml setup.py fastwsrpc/_speedups.pyx
	$(BIN)/python -m pip install -q -e ".[test,bench,redis,nats,otel]"
	@$(BIN)/python -c "import fastwsrpc._speedups" 2>/dev/null || \
	  echo "WARNING: the compiled speedups were not built (no C compiler or Cython?): running on the pure-Python twin. 'pip install -v -e .' shows the compiler's output."
	@if $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then \
	  $(BIN)/python -m pip install -q --no-deps "fastapi-ws-rpc==1.2.0"; \
	else echo "Python < 3.10: fastapi-ws-rpc 1.2 (compatibility tests) not installed"; fi
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/demo.py

# One run proves both implementations: the sans-I/O core and every channel
# behaviour test take the `speedups` fixture (pure and compiled twins side by
# side); the end-to-end tests run on the selected one (compiled when built).
# Without a compiler the compiled half is skipped with a message, unless
# FASTWSRPC_REQUIRE_EXTENSIONS is set (CI sets it), which makes it an error.
test: install
	@$(BIN)/python -c "import fastwsrpc; print('fastwsrpc implementation for end-to-end tests:', fastwsrpc.IMPLEMENTATION)"
	@echo "== the client on its websockets transport (the native one is the default) =="
	$(PYTEST) -q --client-transport=websockets tests/test_e2e_calls.py tests/test_e2e_lifecycle.py tests/test_client_resilience.py tests/test_hardening.py
	@echo "== the whole suite =="
	$(PYTEST)

DOCS_STAMP := $(VENV)/.fastwsrpc-docs-installed

$(DOCS_STAMP): $(BIN)/python docs/requirements.txt
	$(BIN)/python -m pip install -q -r docs/requirements.txt
	@touch $(DOCS_STAMP)

# The documentation site (guide + API reference from docstrings) into site/;
# any warning fails. Needs Python 3.10+ (mkdocstrings-python 2). It reads the
# sources statically: no install of fastwsrpc is needed.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/pytest benchmarks/ --benchmark-only --benchmark-columns=mean,ops,rounds

# The regression gate (docs/guide/benchmarks.md): record a baseline on the code
# you trust, then gate later code on it. The gate runs the end-to-end set and fails,
# naming the benchmark, when one's fastest round (min, CPU time) is more than
# BENCH_FAIL slower than in the latest baseline (the threshold: from the run-to-run
# spread measured on a busy 2-core machine). BENCH_ARGS passes more options
# (--slow-call-path=30 to watch it fail).
BENCH_STORAGE ?= .benchmarks
BENCH_FAIL    ?= min:25%
BENCH_ARGS    ?=
BENCH_RUN     := $(PYTEST) benchmarks/test_e2e.py benchmarks/test_e2e_topics.py --benchmark-only \
                 --benchmark-storage=$(BENCH_STORAGE) --benchmark-columns=min,median,rounds --benchmark-sort=name

bench-baseline: install
	$(BENCH_RUN) --benchmark-save=baseline $(BENCH_ARGS)

# A benchmark past the threshold is measured again: the gate fails only on one that fails twice
# (a busy machine slows a benchmark once in a while, a slower call path every time).
bench-gate: install
	$(BIN)/python benchmarks/gate.py confirm -- \
	  $(BENCH_RUN) --benchmark-compare --benchmark-compare-fail=$(BENCH_FAIL) $(BENCH_ARGS)

compare: install
	$(BIN)/python benchmarks/compare.py

# Pinned, so a fresh clone lints as CI does; installs first (mypy needs the package).
lint: install
	$(BIN)/python -m pip install -q "ruff==0.17.6" "mypy==2.4.1"
	$(BIN)/ruff format --check fastwsrpc tests examples benchmarks
	$(BIN)/ruff check fastwsrpc tests examples benchmarks
	$(BIN)/mypy

clean:
	rm -rf build dist site *.egg-info fastwsrpc/_speedups.c fastwsrpc/_speedups*.so fastwsrpc/_speedups.html
