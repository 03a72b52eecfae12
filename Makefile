# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3

.PHONY: install cluster demo test lint

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

cluster: install
	$(PYTHON) -m tools.testcluster build

demo: install cluster
	$(PYTHON) -m tools.demo

lint:
	ruff check .
	ruff format --check reconciler
	mypy
	lint-imports

test: install cluster lint
	$(PYTHON) -m pytest -q
