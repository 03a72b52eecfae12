# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3

.PHONY: install cluster promtool demo test lint

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev,fleet]'

cluster: install
	$(PYTHON) -m tools.testcluster build

promtool: install
	$(PYTHON) -m tools.promtool build

demo: install cluster
	$(PYTHON) -m tools.demo

lint:
	ruff check .
	ruff format --check reconciler
	mypy

test: install cluster promtool lint
	$(PYTHON) -m pytest -q
