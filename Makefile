# The two commands of the README: `make demo` and `make test`. Each runs `make setup` first.
.PHONY: setup setup-bench demo test test-fast lint format bench lock clean

PY := .venv/bin/python
DEMO_DIR ?= prodml-demo

setup:
	@scripts/setup.sh dev

setup-bench:
	@scripts/setup.sh bench

demo: setup
	.venv/bin/prodml demo --dir $(DEMO_DIR)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not integration"

lint: setup
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy
	.venv/bin/lint-imports

format: setup
	.venv/bin/ruff format src tests benchmarks
	.venv/bin/ruff check --fix src tests benchmarks

bench: setup-bench
	$(PY) benchmarks/bench_validate.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_serve.py

# Re-resolve the locked requirements after changing pyproject.toml.
lock:
	.venv/bin/pip-compile -q --strip-extras --extra dev -o requirements/dev.txt pyproject.toml
	.venv/bin/pip-compile -q --strip-extras --extra dev --extra bench -o requirements/bench.txt pyproject.toml

clean:
	rm -rf .venv $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
