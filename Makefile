# `make demo` and `make test` set everything up themselves on a fresh Debian 12 /
# Raspberry Pi OS (bookworm) machine: apt packages, a virtualenv, the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := pcscd vsmartcard-vpcd libpcsclite-dev swig pcsc-tools socat mosquitto mosquitto-clients openssl
STAMP := $(VENV)/.installed

.PHONY: setup apt venv demo test bench clean

setup: apt $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/door-edge demo

test: setup
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/door-edge bench card --swipes 200 --json

clean:
	rm -rf $(VENV) .pytest_cache .demo
