# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.whatart-installed
EXTRAS := triton,export,ui,wikiart,milvus,test
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install lock browser proto clean

## install: .venv with the runtime, Triton (CPU build), export, UI, WikiArt, Milvus and test extras
install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

## lock: re-pin constraints.txt to what the extras resolve to now (after changing pyproject.toml)
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
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

## proto: regenerate the gRPC stubs from retrieval_service/grpc_api/whatart.proto
proto: install
	$(BIN)/python -m whatart.retrieval_service.grpc_api.generate

clean:
	rm -rf .whatart model_repository/*/
