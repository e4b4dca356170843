# Session Mesh. `make run` and `make test` do their own set-up.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
CHROMIUM := $(VENV)/.chromium
PROTOS   := $(wildcard protos/sessionmesh/v1/*.proto)

.PHONY: setup run cluster console test soak loadtest proto proto-check openapi openapi-check lint bench clean deploy-render deploy-check

setup: $(STAMP) $(CHROMIUM)

$(STAMP): pyproject.toml deploy/install-python.sh
	PY=$(PY) deploy/install-python.sh $(VENV) editable
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
	  --server.address $${CONSOLE_ADDRESS:-127.0.0.1} \
	  --server.port $${CONSOLE_PORT:-8501} --browser.gatherUsageStats false

test: setup
	deploy/install-redis.sh
	deploy/install-tools.sh $(VENV)
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

# The HTTP gateway's OpenAPI document, as the gateway serves it, committed in docs/.
openapi: $(STAMP)
	$(BIN)/python -m gateway.openapi --write docs/openapi.json

# CI: the committed document must be the one the gateway serves.
openapi-check: $(STAMP)
	$(BIN)/python -m gateway.openapi --check docs/openapi.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Kubernetes: rewrite the node sizing patches from docs/benchmarks.md (deploy/k8s/render.py).
deploy-render: $(STAMP)
	$(BIN)/python deploy/k8s/render.py

# Images, compose file and Kubernetes overlays: lint, schemas, rendered patches, invariants.
deploy-check: $(STAMP)
	deploy/install-tools.sh $(VENV)
	$(BIN)/python deploy/k8s/render.py --check
	$(BIN)/pytest -q tests/deploy

bench: setup
	deploy/install-redis.sh
	$(BIN)/python bench/qr_latency.py
	$(BIN)/python bench/remoteauth.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/messages.py
	$(BIN)/python bench/browser_models.py
	$(BIN)/python bench/router_overhead.py
	$(BIN)/python bench/router_streams.py

# The seed's tiers under load (PROFILE=1000|3000; smoke is for tests): writes docs/loadtest.md,
# docs/loadtest.json and docs/loadtest/ (plots, Locust CSV). Starts its own mesh and Redis.
PROFILE ?= 1000
loadtest: setup
	deploy/install-redis.sh
	$(BIN)/python -m loadtest.run --profile $(PROFILE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
