# `make demo` and `make test` set everything up themselves on a fresh Debian 12 /
# Raspberry Pi OS (bookworm) machine: apt packages, a virtualenv, the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := pcscd vsmartcard-vpcd libpcsclite-dev swig pcsc-tools socat mosquitto mosquitto-clients openssl
STAMP := $(VENV)/.installed

FONT_PACKAGES := fonts-noto-cjk fonts-wqy-zenhei fonts-dejavu-core
PLATES_TRAIN ?= ../shared/data/plates_train
BACKGROUNDS ?= ../shared/data/faces

.PHONY: setup apt fonts venv demo test bench bench-deps train-deps train-plates clean

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

fonts:
	@missing=""; for p in $(FONT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
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

bench-deps: setup fonts
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/pip install -q --no-deps 'hyperlpr2==2.0.0'   # the plate peer; its own deps would pull the GUI OpenCV

bench: bench-deps
	$(VENV)/bin/door-edge bench card --swipes 200 --json

# Training the plate models (not part of make test): torch CPU, ONNX export, the fonts for synthesis.
train-deps: setup fonts
	$(VENV)/bin/pip install -q 'torch==2.13.0' -e '.[train]'

train-plates: train-deps
	$(VENV)/bin/python -m edge.vision.train.recognizer --real $(PLATES_TRAIN) --out /tmp/door-edge-stage1/plate_rec.onnx \
	  --synthetic 50000 --steps 15000 --green 0.35 --seed 17
	$(VENV)/bin/python -m edge.vision.train.recognizer --real $(PLATES_TRAIN) --out models/plate_rec.onnx \
	  --init /tmp/door-edge-stage1/plate_rec.pt --lr 5e-4 --synthetic 50000 --steps 8000 --green 0.4 --seed 23
	$(VENV)/bin/python -m edge.vision.train.recognizer --real $(PLATES_TRAIN) --size large --out /tmp/door-edge-large1/plate_rec_large.onnx \
	  --synthetic 50000 --steps 9000 --green 0.4 --seed 101
	$(VENV)/bin/python -m edge.vision.train.recognizer --real $(PLATES_TRAIN) --size large --out models/plate_rec_large.onnx \
	  --init /tmp/door-edge-large1/plate_rec_large.pt --lr 5e-4 --synthetic 50000 --steps 5000 --green 0.4 --seed 103
	$(VENV)/bin/python -m edge.vision.train.detector --real $(PLATES_TRAIN) --backgrounds $(BACKGROUNDS) --out models/plate_det.onnx \
	  --scenes 8000 --steps 4000 --seed 11
	$(VENV)/bin/python -m edge.vision.train.province --real $(PLATES_TRAIN) --out models/plate_prov.onnx --synthetic 100000 --steps 16000 --seed 43
	$(VENV)/bin/python -m edge.vision.train.manifest

clean:
	rm -rf $(VENV) .pytest_cache .demo
