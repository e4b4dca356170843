# Session Mesh. `make run` and `make test` do their own set-up.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
CHROMIUM := $(VENV)/.chromium
PROTOS   := $(wildcard protos/sessionmesh/v1/*.proto)

.PHONY: setup run cluster console test test-fast proto proto-check lint bench clean

setup: $(STAMP) $(CHROMIUM)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(CHROMIUM): $(STAMP)
	deploy/install-chromium.sh $(VENV)
	touch $@

run: setup
	$(BIN)/python -m sessionmesh.devrun

test: setup
	deploy/install-redis.sh
	$(BIN)/pytest -q

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# CI: the committed stubs must be what `make proto` makes.
proto-check: proto
	git diff --exit-code -- sessionmesh/v1

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/qr_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
