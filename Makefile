# fastwsrpc developer commands. Everything runs in .venv, made on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fastwsrpc-installed
PYTEST := $(BIN)/pytest -p no:cacheprovider

.PHONY: install demo test test-compiled test-pure bench compare lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Editable install builds the compiled speedups in place when a C compiler is
# there (and warns, then carries on with the pure twin, when it is not).
$(STAMP): $(BIN)/python pyproject.toml setup.py fastwsrpc/_speedups.pyx
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	@if $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then \
	  $(BIN)/python -m pip install -q --no-deps "fastapi-ws-rpc==1.2.0"; \
	else echo "Python < 3.10: fastapi-ws-rpc 1.2 (compatibility tests) not installed"; fi
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/demo.py

# The whole suite twice: once on the compiled hot path, once on the pure twin.
# Without a compiler the compiled run is skipped with a warning, unless
# FASTWSRPC_REQUIRE_EXTENSIONS is set (CI sets it), which makes it an error.
test: install
	@if [ -n "$$FASTWSRPC_REQUIRE_EXTENSIONS" ] || $(BIN)/python -c "import fastwsrpc._speedups" 2>/dev/null; then \
	  echo "== fastwsrpc test suite: compiled implementation (cython) =="; \
	  env -u FASTWSRPC_NO_EXTENSIONS FASTWSRPC_REQUIRE_EXTENSIONS=1 $(PYTEST) -q || exit 1; \
	else \
	  echo "WARNING: compiled speedups not built (no C compiler?): testing the pure-Python implementation only"; \
	fi
	@echo "== fastwsrpc test suite: pure-Python implementation =="
	@env -u FASTWSRPC_REQUIRE_EXTENSIONS FASTWSRPC_NO_EXTENSIONS=1 $(PYTEST)

bench: install
	$(BIN)/pytest benchmarks/ --benchmark-only --benchmark-columns=mean,ops,rounds

compare: install
	$(BIN)/python benchmarks/compare.py

lint:
	$(BIN)/python -m pip install -q ruff mypy
	$(BIN)/ruff format --check fastwsrpc tests examples benchmarks
	$(BIN)/ruff check fastwsrpc tests examples benchmarks
	$(BIN)/mypy

clean:
	rm -rf build dist *.egg-info fastwsrpc/_speedups.c fastwsrpc/_speedups*.so fastwsrpc/_speedups.html
