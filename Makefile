# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3

.PHONY: install cluster promtool charttools demo test lint

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev,fleet]'

cluster: install
	$(PYTHON) -m tools.testcluster build

promtool: install
	$(PYTHON) -m tools.promtool build

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

# What runs on a store's node; its branch coverage (cluster tests included) must stay >= 90 %.
NODE_PART = reconciler/node/*

test: install cluster promtool charttools lint
	rm -f .coverage .coverage.*
	$(PYTHON) -m pytest -q --cov --cov-report=term
	@echo "branch coverage of the node's part (reconciler/node: agent, pipeline, fetch, inbox, feed, state, config, apply):"
	$(PYTHON) -m coverage report --include='$(NODE_PART)' --no-skip-covered --fail-under=90
