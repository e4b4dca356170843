#!/usr/bin/env bash
# The Secrets the manifests refer to, made with random values and applied with kubectl; none of
# them is ever in git or in a manifest. Re-running leaves existing Secrets as they are.
#   deploy/k8s/make-secrets.sh [NAMESPACE] [--external-redis REDIS_URL] [--cert-manager]
# Then read the API token back:  kubectl -n session-mesh get secret mesh-api \
#   -o jsonpath='{.data.MESH_API_TOKENS}' | base64 -d
# Mutual TLS between routers and nodes: without --cert-manager, this makes mesh-node-mtls and
# mesh-router-mtls (tls.crt, tls.key, ca.crt) from a private CA made here with the mesh's own
# tool (python -m sessionmesh.certs: PY must import sessionmesh, as the repository's .venv
# does); the CA's key is never written, so renew by deleting both Secrets and running this
# again (the certificates live MTLS_DAYS, default 365). With --cert-manager, the
# cert-manager component makes and renews them instead (and the routers' public TLS).
set -euo pipefail
ns=session-mesh
redis_url=""
cert_manager=false
while [ $# -gt 0 ]; do
  case $1 in
    --external-redis) redis_url=${2:?give the Redis URL}; shift 2 ;;
    --cert-manager) cert_manager=true; shift ;;
    -*) echo "make-secrets: unknown option $1" >&2; exit 2 ;;
    *) ns=$1; shift ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "${PY:-}" ] && [ -x "$root/.venv/bin/python" ]; then PY=$root/.venv/bin/python; fi
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
tls_secret() { # name, folder with cert.pem, key.pem, ca.pem
  if exists "$1"; then echo "secret $1: exists, kept"; return; fi
  kubectl -n "$ns" create secret generic "$1" --type=kubernetes.io/tls \
    --from-file=tls.crt="$2/cert.pem" --from-file=tls.key="$2/key.pem" \
    --from-file=ca.crt="$2/ca.pem" >/dev/null
  echo "secret $1: created"
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
if [ "$cert_manager" = false ]; then
  if exists mesh-node-mtls && exists mesh-router-mtls; then
    echo "secret mesh-node-mtls, mesh-router-mtls: exist, kept"
  else
    # Both from one new CA, or they would not trust each other.
    kubectl -n "$ns" delete secret mesh-node-mtls mesh-router-mtls --ignore-not-found >/dev/null
    certs=$(mktemp -d)
    trap 'rm -rf "$certs"' EXIT
    # The router's certificate carries spiffe://session-mesh/router (nodes answer only that);
    # the nodes' the name routers check (MESH_MTLS_NODE_NAME=mesh-node).
    (cd "$root" && "$py" -m sessionmesh.certs --per-name --days "${MTLS_DAYS:-365}" "$certs" \
      router=mesh-router mesh-node=mesh-node) >/dev/null
    tls_secret mesh-router-mtls "$certs/router"
    tls_secret mesh-node-mtls "$certs/mesh-node"
  fi
fi
