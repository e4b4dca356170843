# Session Mesh. `make run` and `make test` do their own set-up.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
CHROMIUM := $(VENV)/.chromium
PROTOS   := $(wildcard protos/sessionmesh/v1/*.proto)

.PHONY: setup run cluster console test soak proto proto-check lint bench clean

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

# Redis, sandbox, three nodes and two routers with RemoteAuth (REDIS_URL: use that Redis).
cluster: setup
	$(BIN)/python -m sessionmesh.cluster

# The ops console against a running mesh (MESH_ROUTER, MESH_TOKEN; `make run` writes .run/env).
console: setup
	@test -n "$$MESH_TOKEN" || test -f .run/env || { echo "set MESH_TOKEN (or start make run first)"; exit 2; }
	@if [ -z "$$MESH_TOKEN" ]; then . ./.run/env; fi; \
	  $(BIN)/streamlit run console/app.py --server.headless true \
	  --server.port $${CONSOLE_PORT:-8501} --browser.gatherUsageStats false

test: setup
	deploy/install-redis.sh
	$(BIN)/pytest -q

# The long chaos and soak runs (MESH_CHAOS_ROUNDS, default 8).
soak: setup
	deploy/install-redis.sh
	$(BIN)/pytest -q -m slow

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
	deploy/install-redis.sh
	$(BIN)/python bench/qr_latency.py
	$(BIN)/python bench/remoteauth.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
