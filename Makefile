# s3fmfs: everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_DIR := tests/node
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc libc6-dev rsync sqlite3 git curl tar

.PHONY: all apt venv npm deps check lint typecheck test demo install clean

all: test

# System packages: FUSE (headers for pyfuse3, built from source), and the Unix tools the tests
# drive. Added only when missing: Debian's python3 needs python3-venv for `-m venv` and
# python3-dev for Python.h; node/npm come from Debian if the machine has none.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || missing="$$missing python3-dev"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | apt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: apt $(VENV)/.installed

# s3rver checks Signature V2 (header and query); it is a test server only. The lock file pins
# the whole tree (`npm ci`); `npm install` only when it is missing.
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(wildcard $(NODE_DIR)/package-lock.json) | apt
	cd $(NODE_DIR) && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; \
	  else npm install --no-audit --no-fund --loglevel=error; fi
	touch $@

npm: $(NODE_DIR)/node_modules/.installed

deps: venv npm

lint: venv
	$(VENV)/bin/ruff check s3fmfs tests
	$(VENV)/bin/ruff format --check s3fmfs tests

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck

test: deps check
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

demo: deps
	@echo "make demo: coming with the mounting issue (s3fmfs demo)."

install: venv
	install -m 0755 -d /usr/local/bin
	ln -sf $(abspath $(VENV))/bin/s3fmfs /usr/local/bin/s3fmfs

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache
