# Two installs, both from requirements.lock so two installs a month apart get the same versions:
#   make install   the gateway: the runtime only (pcscd, pyscard's build needs, the package, non-editable)
#   make dev       development: adds the virtual devices' system parts (vpcd, socat, mosquitto, pcsc-tools)
#                  and the package editable, with the rigs, devtools and training on the venv's path
# `make demo` and `make test` run `make dev` first, on a fresh Debian 12 / Raspberry Pi OS (bookworm)
# machine as well. They run as a normal user: sudo is used only for apt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
LOCK := requirements.lock
# pcscd, and what pyscard (no wheel on PyPI) needs to build: a compiler, the Python headers, swig, PC/SC headers
RUNTIME_APT := pcscd libpcsclite-dev swig gcc python3-dev python3-venv
# the far side of the real parts, for tests, bench and demo only: never on a gateway (vpcd listens on TCP);
# a headless Chromium and a CJK font for the office console's browser tests and screenshots; PostgreSQL for central on its second backend
DEV_APT := vsmartcard-vpcd pcsc-tools socat mosquitto mosquitto-clients openssl chromium chromium-driver fonts-wqy-zenhei postgresql
FONT_APT := fonts-noto-cjk fonts-wqy-zenhei fonts-dejavu-core
DEV_STAMP := $(VENV)/.dev-installed
PLATES_TRAIN ?= ../shared/data/plates_train
BACKGROUNDS ?= ../shared/data/faces

.PHONY: install dev setup apt-runtime apt-dev fonts demo test lint check-wheel lock bench bench-deps train-deps train-plates train-plates-green train-plates-night clean

define apt_install
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

apt-runtime:
	$(call apt_install,$(RUNTIME_APT))

apt-dev: apt-runtime
	$(call apt_install,$(DEV_APT))

fonts:
	$(call apt_install,$(FONT_APT))

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The gateway: a non-editable install of the runtime wheel's contents, pinned by the lock file.
install: apt-runtime $(VENV)/bin/python
	$(VENV)/bin/pip install -q -c $(LOCK) .
	@echo "installed door-edge into $(VENV); see README 'Install on a gateway' for the unit and the config"

# Development: editable, with the test tools, and the source tree on the path (rigs, devtools, training).
$(DEV_STAMP): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -c $(LOCK) -e '.[test,dev,central]'
	$(VENV)/bin/python -c 'import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "door-edge-dev.pth").write_text("$(CURDIR)\n")'
	touch $(DEV_STAMP)

dev: apt-dev $(DEV_STAMP)

setup: dev  # the old name

demo: dev
	$(VENV)/bin/door-edge demo

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The runtime wheel, installed non-editable into a clean venv: config check, the plate models from
# the installed package, and nothing of the bench inside (tests/test_wheel.py does the work).
check-wheel: $(DEV_STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_wheel.py

test: dev lint
	$(VENV)/bin/python -m pytest -q

# Refresh the lock: resolve the newest versions the ranges in pyproject.toml allow, in a scratch venv,
# then run `make test` and commit requirements.lock with the change that needed it.
lock:
	rm -rf /tmp/door-edge-lock && $(PYTHON) -m venv /tmp/door-edge-lock
	/tmp/door-edge-lock/bin/pip install -q --upgrade pip
	/tmp/door-edge-lock/bin/pip install -q '.[test,dev,bench,central]'
	{ echo "# pip install -c requirements.lock ...; refresh with \`make lock\` (see README)"; \
	  /tmp/door-edge-lock/bin/pip freeze --all --exclude door-edge; } > $(LOCK)
	rm -rf /tmp/door-edge-lock

bench-deps: dev fonts
	$(VENV)/bin/pip install -q -c $(LOCK) -e '.[bench]'
	$(VENV)/bin/pip install -q --no-deps 'hyperlpr2==2.0.0'   # the plate peer; its own deps would pull the GUI OpenCV

bench: bench-deps
	$(VENV)/bin/door-edge bench card --swipes 200 --json

# Training the plate models (not part of make test): torch CPU, ONNX export, the fonts for synthesis.
train-deps: dev fonts
	$(VENV)/bin/pip install -q 'torch==2.13.0' -e '.[train]'

# the large recogniser before its green fine-tune (train-plates-green starts from it, not from the
# shipped file, which is already fine-tuned: running train-plates-green twice would fine-tune twice)
LARGE_BASE := /tmp/door-edge-large2/plate_rec_large.onnx

train-plates: train-deps
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --out /tmp/door-edge-stage1/plate_rec.onnx \
	  --synthetic 50000 --steps 15000 --green 0.35 --seed 17
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --out models/plate_rec.onnx \
	  --init /tmp/door-edge-stage1/plate_rec.pt --lr 5e-4 --synthetic 50000 --steps 8000 --green 0.4 --seed 23
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --size large --out /tmp/door-edge-large1/plate_rec_large.onnx \
	  --synthetic 50000 --steps 9000 --green 0.4 --seed 101
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --size large --out $(LARGE_BASE) \
	  --init /tmp/door-edge-large1/plate_rec_large.pt --lr 5e-4 --synthetic 50000 --steps 5000 --green 0.4 --seed 103
	$(VENV)/bin/python -m training.plates.detector --real $(PLATES_TRAIN) --backgrounds $(BACKGROUNDS) --out models/plate_det.onnx \
	  --scenes 8000 --steps 4000 --seed 11
	$(VENV)/bin/python -m training.plates.province --real $(PLATES_TRAIN) --out models/plate_prov.onnx --synthetic 100000 --steps 16000 --seed 43
	$(MAKE) train-plates-green
	$(MAKE) train-plates-night

# The green readers and the large recogniser's second look, fine-tuned from the models above (their
# ONNX files, BatchNorm frozen) on green new-energy plates drawn as real ones look, in glyphs cut from
# the real training crops (training/plates/glyphs.py). Green crops go to plate_rec_green and
# plate_prov_green (edge.vision.plate_cues.palette); the others keep plate_rec and plate_prov,
# whose blue reads a green fine-tune would cost. Run after train-plates: it starts from its models.
train-plates-green: train-deps
	@test -f $(LARGE_BASE) || { echo "$(LARGE_BASE) is missing: the large recogniser's green fine-tune starts from the model make train-plates trains before it; run make train-plates"; exit 2; }
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --init models/plate_rec.onnx \
	  --out /tmp/door-edge-green1/plate_rec_green.onnx --lr 4e-4 --synthetic 30000 --steps 6000 --green 0.5 --seed 31
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --init /tmp/door-edge-green1/plate_rec_green.onnx \
	  --out models/plate_rec_green.onnx --lr 3e-4 --synthetic 30000 --steps 6000 --green 0.8 --seed 37
	$(VENV)/bin/python -m training.plates.province --real $(PLATES_TRAIN) --init models/plate_prov.onnx --out models/plate_prov_green.onnx \
	  --lr 5e-4 --synthetic 30000 --steps 3000 --green 0.8 --seed 53
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --size large --init $(LARGE_BASE) \
	  --out models/plate_rec_large.onnx --lr 4e-4 --synthetic 30000 --steps 2500 --green 0.5 --seed 109
	$(VENV)/bin/python -m training.plates.manifest

# The plain readers, for plates seen without colour (an infrared camera at night): plate_rec and
# plate_prov fine-tuned (BatchNorm frozen) on batches of which a share is made colourless
# (training.plates.data.colourless). Crops with no plate colour go to them (edge.vision.plate_cues.
# palette); the others keep their readers, whose colour reads this fine-tune cost (a percent of the
# dev crops). Run after train-plates-green: it starts from plate_rec and plate_prov, as they ship.
train-plates-night: train-deps
	$(VENV)/bin/python -m training.plates.recognizer --real $(PLATES_TRAIN) --init models/plate_rec.onnx --out models/plate_rec_night.onnx \
	  --lr 5e-4 --synthetic 30000 --steps 3000 --green 0.4 --colourless 0.6 --seed 139
	$(VENV)/bin/python -m training.plates.province --real $(PLATES_TRAIN) --init models/plate_prov.onnx --out models/plate_prov_night.onnx \
	  --lr 5e-4 --synthetic 30000 --steps 3000 --green 0.4 --colourless 0.6 --seed 137
	$(VENV)/bin/python -m training.plates.manifest

clean:
	rm -rf $(VENV) .pytest_cache .demo build *.egg-info
