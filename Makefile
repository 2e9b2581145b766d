# The two set-up commands of the README, for a fresh machine:
#   make demo   - create .venv, install, run the whole job on the embedded demo dataset
#   make test   - create .venv, install (with dev extras), lint, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install demo demo-scenes test lint format bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python cli.py demo --workdir runs/demo

demo-scenes: $(STAMP)
	test -d runs/demo/export || $(BIN)/python cli.py demo --workdir runs/demo
	$(BIN)/python -m hpsh_tf2.index.scene_demo --workdir runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/bench_train_step.py --loss-only
	$(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/bench_search.py
	$(BIN)/python bench/bench_serving.py
	$(BIN)/python bench/bench_extract.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
