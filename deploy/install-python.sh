#!/usr/bin/env bash
# The package and its dependencies in a virtual environment: `make setup` (editable, with the
# dev tools) and the container images (`deploy/Dockerfile`: a plain install, no dev tools).
#   deploy/install-python.sh VENV [editable|image]
set -eu
venv=${1:-.venv}
mode=${2:-editable}
py=${PY:-python3}
test -x "$venv/bin/python" || "$py" -m venv "$venv"
case "$mode" in
  editable)
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e '.[dev]'
    ;;
  image)
    "$venv/bin/pip" install -q --no-cache-dir --upgrade pip
    "$venv/bin/pip" install -q --no-cache-dir .
    ;;
  *)
    echo "install-python: mode must be editable or image, got '$mode'" >&2
    exit 2
    ;;
esac
