# s3fmfs: everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_DIR := tests/node
# s3fs: s3fs-fuse itself, mounted side by side with s3fmfs by tests/test_s3fs_interop.py.
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc libc6-dev rsync sqlite3 git curl tar systemd s3fs attr autoconf automake

.PHONY: all apt venv npm deps check lint typecheck test test-quick demo docs bench install uninstall clean

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

# Every test (CI runs this). `test-quick` leaves out the soak and system tiers (markers in
# pyproject.toml: long runs; mount(8)/systemd/whole-process tests) and the lint: a few minutes.
test: deps check
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-quick: deps
	$(VENV)/bin/pytest -q -m "not soak and not system" $(PYTEST_ARGS)

# A sample bucket on moto's S3 server (loopback), mounted on $(MOUNTPOINT) (default ./mnt) in
# the foreground; Ctrl-C unmounts and stops the server. moto comes with the test extras; the
# `demo` extra is installed here only when a venv was made without them.
demo: venv
	@$(PY) -c 'import moto.server' >/dev/null 2>&1 || $(PY) -m pip install -q -e '.[demo]'
	$(VENV)/bin/s3fmfs demo $(or $(MOUNTPOINT),mnt)

# docs/CONFIGURATION.md is generated from the option table (s3fmfs/config/options.py);
# tests/test_config.py fails when the committed page differs.
docs: venv
	$(PY) -m s3fmfs.config.docs > docs/CONFIGURATION.md

# Benchmark (tests/bench/): its own s3rver, every workload for s3fmfs, a raw client and the
# peers installed (s3fs-fuse, rclone mount); prints one table per latency mode, loopback and
# 10 ms each way through tests/support/latency_proxy.py (BENCH_LATENCY_MS=0,10; =10 alone: just
# that one), with the requests per file each system made, and the CPU-per-request
# microbenchmark (also written to BENCH_OUT=). PEERS=1 installs the peers from Debian first
# (s3fs 1.90, rclone 1.60 on Debian 12). Needs root to drop the page cache before each
# measurement. Sizes, runs, timeouts: BENCH_* (tests/bench/config.py). With both peers and
# BENCH_PEER_RUNS=1 a full run took 29 min on 2 cores (loopback alone 6 min); a peer past
# BENCH_PEER_TIMEOUT (180 s, e.g. rclone's ls -l of 10,000 objects or s3fs's untar at 10 ms) is
# shown as timed out.
bench: deps
	@if [ "$(PEERS)" = 1 ]; then missing=""; \
	  for p in s3fs rclone; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	  fi; \
	fi
	$(PY) -m tests.bench.run

# A runtime of its own, apart from the clone: `python3 -m venv $(INSTALL_DIR)` holding only s3fmfs
# (a wheel built from a copy of this tree: nothing points back into the clone) and its runtime
# dependencies, owned by whoever runs make (root), never the dev venv; then links to its console
# scripts where mount(8) finds them: it looks for mount.<type> helpers in /sbin only (libmount
# searches /sbin:/sbin/fs.d:/sbin/fs, never $PATH) and runs them, and mount.fuse3 the `s3fmfs` of
# type fuse.s3fmfs, with PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin, as
# systemd does. pyfuse3 is built from source (apt: libfuse3-dev pkg-config gcc). Idempotent: a
# second run updates s3fmfs in place. uninstall removes the runtime (only a directory this made:
# it holds $(RUNTIME_MARK)) and only the links that point into it (or into this clone's .venv,
# where an older `make install` linked).
INSTALL_DIR ?= /opt/s3fmfs
BINDIR ?= /usr/local/bin
SBINDIR ?= /sbin
RUNTIME_MARK := .s3fmfs-runtime
INSTALL_LINKS := $(BINDIR)/s3fmfs $(SBINDIR)/mount.s3fmfs
RUNTIME := $(abspath $(INSTALL_DIR))

install:
	@set -e; umask 022; \
	if [ -e $(RUNTIME) ] && [ ! -e $(RUNTIME)/$(RUNTIME_MARK) ] && [ -n "$$(ls -A $(RUNTIME))" ]; then \
	  echo "$(RUNTIME) exists and is not an s3fmfs runtime: not touching it"; exit 1; fi; \
	if [ ! -x $(RUNTIME)/bin/python ]; then \
	  echo "creating $(RUNTIME)"; $(PYTHON) -m venv $(RUNTIME); \
	  $(RUNTIME)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip; fi; \
	touch $(RUNTIME)/$(RUNTIME_MARK); \
	work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md s3fmfs | tar -x -C $$work; \
	$(RUNTIME)/bin/python -m pip wheel -q --disable-pip-version-check --no-deps -w $$work/dist $$work; \
	$(RUNTIME)/bin/python -m pip install -q --disable-pip-version-check $$work/dist/s3fmfs-*.whl; \
	$(RUNTIME)/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
	  $$work/dist/s3fmfs-*.whl; \
	echo "installed $$($(RUNTIME)/bin/s3fmfs --version) in $(RUNTIME)"
	install -m 0755 -d $(BINDIR) $(SBINDIR)
	@for f in $(INSTALL_LINKS); do echo "$$f -> $(RUNTIME)/bin/$$(basename $$f)"; \
	  ln -sfn $(RUNTIME)/bin/$$(basename $$f) $$f || exit 1; done

uninstall:
	@for f in $(INSTALL_LINKS); do target=$$(readlink $$f); \
	  if [ "$$target" = "$(RUNTIME)/bin/$$(basename $$f)" ] || [ "$$target" = "$(abspath $(VENV))/bin/$$(basename $$f)" ]; then \
	    rm -f $$f && echo "removed $$f"; fi; \
	done
	@if [ -e $(RUNTIME)/$(RUNTIME_MARK) ]; then rm -rf $(RUNTIME) && echo "removed $(RUNTIME)"; fi

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache
