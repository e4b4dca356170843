#!/usr/bin/env bash
# The Secrets the manifests refer to, made with random values and applied with kubectl; none of
# them is ever in git or in a manifest. Re-running leaves existing Secrets as they are.
#   deploy/k8s/make-secrets.sh [NAMESPACE] [--external-redis REDIS_URL]
# Then read the API token back:  kubectl -n session-mesh get secret mesh-api \
#   -o jsonpath='{.data.MESH_API_TOKENS}' | base64 -d
# TLS material: the cert-manager component makes mesh-router-tls, mesh-router-mtls and
# mesh-node-mtls; without cert-manager, create them with `kubectl create secret tls` plus ca.crt.
set -euo pipefail
ns=${1:-session-mesh}
redis_url=""
if [ "${2:-}" = "--external-redis" ]; then redis_url=${3:?give the Redis URL}; fi
py=${PY:-python3}
random() { "$py" -c 'import secrets; print(secrets.token_urlsafe(32))'; }
exists() { kubectl -n "$ns" get secret "$1" >/dev/null 2>&1; }
make() { # name, then key=value pairs
  local name=$1; shift
  if exists "$name"; then echo "secret $name: exists, kept"; return; fi
  local args=()
  for pair in "$@"; do args+=(--from-literal="$pair"); done
  kubectl -n "$ns" create secret generic "$name" "${args[@]}" >/dev/null
  echo "secret $name: created"
}
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
token=$(random)
make mesh-api "MESH_API_TOKENS=app:$(random),ops:$token"
make mesh-console "MESH_TOKEN=$token" "MESH_CONSOLE_PASSWORD=$(random)"
# A 32-byte AES-GCM key as node.crypto makes it (kid:base64key).
make mesh-snapshot "MESH_SNAPSHOT_KEY=k1:$("$py" -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
if [ -n "$redis_url" ]; then
  make mesh-redis "REDIS_URL=$redis_url"
else
  make mesh-redis "REDIS_PASSWORD=$(random)"
fi
