# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3

.PHONY: install cluster charttools demo test lint

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

cluster: install
	$(PYTHON) -m tools.testcluster build

# helm and kustomize for `outpost app vendor` and its tests, from the Go module proxy
charttools:
	$(PYTHON) -m tools.charttools build

demo: install cluster
	$(PYTHON) -m tools.demo

lint:
	ruff check .
	ruff format --check reconciler
	mypy
	lint-imports

test: install cluster charttools lint
	$(PYTHON) -m pytest -q
