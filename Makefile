# Gatehouse: `make run` for the demo portal, `make test` for the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test install install-test system-packages clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The demo release is built with the engine's writers, so `make run` installs the worker extra.
$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[worker]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[worker,test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test system-packages tests/axe/node_modules/.installed

# axe-core, the accessibility checker the browser tests inject into chromium (from the npm registry).
tests/axe/node_modules/.installed: tests/axe/package.json tests/axe/package-lock.json
	cd tests/axe && npm ci --no-audit --no-fund --silent
	touch $@

# Debian packages the browser and compose tests use (installed only when missing).
system-packages:
	@scripts/install-system-packages.sh chromium:chromium docker-compose:docker-compose npm:npm

run: install
	scripts/run-demo.sh

test: install-test
	DEBUG=0 $(PY) manage.py collectstatic --noinput -v 0
	scripts/with-services.sh $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) staticfiles var .pytest_cache tests/axe/node_modules
