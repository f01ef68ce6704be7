# s3fmfs: everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_DIR := tests/node
APT_PACKAGES := fuse3 libfuse3-dev pkg-config rsync sqlite3 git curl tar

.PHONY: all apt venv npm deps check lint typecheck test demo install clean

all: test

# System packages: FUSE (headers for pyfuse3), and the Unix tools the tests drive.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
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

# s3rver checks Signature V2 (header and query); it is a test server only.
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json
	cd $(NODE_DIR) && npm install --no-audit --no-fund --loglevel=error
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
