# The two set-up commands of the README (docs/getting-started.md), for a fresh machine:
#   make demo   - create .venv, install, run the whole job on the embedded demo dataset
#   make test   - create .venv, install (with dev extras), lint, build the docs strictly, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install demo demo-scenes test lint docs format bench clean

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

# The documentation site, built strictly (a broken link, anchor or API reference fails) into
# site/ (ignored by git; `make docs SITE=DIR` builds elsewhere).
SITE ?= site
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir $(SITE)

# Two pytest workers (pytest-xdist), one test file each at a time: module fixtures stay in one
# process. On 2 cores this takes the suite from about 18 to about 13 minutes (docs/development.md).
test: $(STAMP) lint docs
	$(BIN)/python -m pytest -m "not slow" -n 2 --dist loadfile $(PYTEST_ARGS)

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
	rm -rf runs site .pytest_cache .ruff_cache
