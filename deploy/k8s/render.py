"""Node pod sizing for the Kubernetes overlays, from the tier planner's figures.

    .venv/bin/python deploy/k8s/render.py           # rewrite the overlays' rendered patches
    .venv/bin/python deploy/k8s/render.py --check   # exit 1 if a committed patch differs

One model, the planner's (console/planner.py): per-session memory and CPU as docs/benchmarks.md
states them (`parse_benchmarks`), its headroom and CPU reserve, times each overlay's
MAX_CONCURRENT_SESSIONS (base/node.env, overlays/NAME/node.env), plus the browser's base and the
node process. The drain time, and so terminationGracePeriodSeconds and the autoscaler's
scale-down pace, come from the hand-off and failover figures in the same file. Each rendered
file carries its derivation with the numbers used.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from console import planner
from node.host import HANDOFF_PARALLELISM

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
MIB = planner.MIB

# The node process beside Chromium: mesh-node (Python, 63.6 MB PSS) and Playwright's driver
# (Node.js, 123.7 MB PSS) with no session, measured on the bench machine (2026-11-30, /proc
# smaps_rollup of a mesh-node started alone). Not yet measured by `make bench`, nor with
# sessions held: their growth per session is inside the per-session figure only as far as the
# bench's PSS of Chromium covers it, which it does not.
NODE_PROCESS_MEMORY = 184 * MIB
# Chromium runs with --disable-dev-shm-usage (sessionmesh/chromium.py) and keeps its shared
# memory in /tmp, so /dev/shm stays small; a memory-backed emptyDir counts toward the limit.
SHM_SIZE = 128 * MIB
# The drain's own figures: a factor over the measured hand-off time (the bench's page is far
# lighter than WhatsApp Web's, so snapshots are bigger there), and seconds to close Chromium,
# Redis and telemetry after the gRPC server stopped.
DRAIN_SAFETY = 2.0
CLOSE_SECONDS = 5.0
# Scale-down removes one node per period: its drain plus the failover that starts its sessions
# on the others, rounded up to this many seconds, and never faster than one a minute.
SCALE_DOWN_ROUNDING = 30
SCALE_DOWN_MIN_PERIOD = 60


class FigureMissing(ValueError):
    """docs/benchmarks.md no longer states a figure the model needs."""


# -- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What docs/benchmarks.md measured, as the model uses it."""

    session_memory: float  # bytes per READY session
    session_cpu: float  # cores per READY session
    browser_base: float  # bytes: Chromium with no session (its warm spare page)
    handoff_seconds: float  # one session's hand-off (final snapshot, close, lease released)
    handoff_source: str
    failover_seconds: float  # kill -> READY elsewhere, p95, default settings


def _table(text: str, header_word: str) -> list[dict[str, str]]:
    """Rows of the first markdown table whose header row mentions `header_word`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and header_word.lower() in line.lower():
            header = [c.strip().lower() for c in line.strip().strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip().strip("|").split("|")]
                rows.append(dict(zip(header, cells, strict=False)))
            return rows
    return []


def _number(cell: str, what: str) -> float:
    m = re.match(r"\s*([\d.]+)", cell)
    if m is None:
        raise FigureMissing(f"docs/benchmarks.md: {what} is not a number: {cell!r}")
    return float(m.group(1))


def _mib(cell: str, what: str) -> float:
    value = _number(cell, what)
    unit = cell.strip().split()[-1].lower() if " " in cell.strip() else "mib"
    scale = {"kib": 1 / 1024, "mib": 1.0, "gib": 1024.0, "mb": 1e6 / MIB, "gb": 1e9 / MIB}
    if unit not in scale:
        raise FigureMissing(f"docs/benchmarks.md: {what} has an unknown unit: {cell!r}")
    return value * scale[unit] * MIB


def parse_figures(text: str) -> Figures:
    """The model's figures from the text of docs/benchmarks.md; FigureMissing names any gap."""
    memory, cpu = planner.parse_benchmarks(text)
    if memory is None or cpu is None:
        raise FigureMissing(
            "docs/benchmarks.md states no `per-session memory: N MiB; per-session CPU: N cores` "
            "line (bench/qr_latency.py writes it)"
        )
    m = re.search(r"browser base[^\n\d]*?([\d.]+\s*(?:KiB|MiB|GiB|MB|GB))", text, re.IGNORECASE)
    if m:
        base = _mib(m.group(1), "browser base")
    else:
        rows = [r for r in _table(text, "with no session") if r.get("with no session")]
        if not rows:
            raise FigureMissing(
                "docs/benchmarks.md has no `with no session` column (Chromium's own memory)"
            )
        widest = max(rows, key=lambda r: _number(next(iter(r.values())), "READY sessions"))
        base = _mib(widest["with no session"], "with no session")
    m = re.search(r"hand-?off per session[^\n\d]*?([\d.]+)\s*s\b", text, re.IGNORECASE)
    if m:
        handoff, handoff_source = float(m.group(1)), "hand-off per session"
    else:
        # Not measured apart yet: a RemoteAuth restore (read, decrypt and load a snapshot, then
        # reach READY) does more than a hand-off (take and write one, close the page), so its
        # p95 stands in as an upper bound.
        restores = {r.get("auth", ""): r for r in _table(text, "restores")}
        if "RemoteAuth" not in restores:
            raise FigureMissing("docs/benchmarks.md has no RemoteAuth restore row")
        handoff = _number(restores["RemoteAuth"]["p95"], "RemoteAuth restore p95")
        handoff_source = "RemoteAuth restore p95, standing in for a hand-off"
    failover = {r.get("settings", ""): r for r in _table(text, "back ready")}
    if "default" not in failover:
        raise FigureMissing("docs/benchmarks.md has no failover row for the default settings")
    return Figures(
        session_memory=memory,
        session_cpu=cpu,
        browser_base=base,
        handoff_seconds=handoff,
        handoff_source=handoff_source,
        failover_seconds=_number(failover["default"]["p95"], "failover p95"),
    )


def read_env(*paths: Path) -> dict[str, str]:
    """KEY=value lines of env files, later files overriding earlier ones."""
    env: dict[str, str] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    return env


# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePod:
    """One mesh-node pod sized for `max_sessions` READY sessions."""

    max_sessions: int
    figures: Figures
    shutdown_grace: float
    headroom: float = planner.DEFAULT_HEADROOM

    @property
    def memory_request(self) -> int:
        """MiB: the node process + Chromium's base + memory per session x MAX_CONCURRENT_SESSIONS."""
        f = self.figures
        total = NODE_PROCESS_MEMORY + f.browser_base + f.session_memory * self.max_sessions
        return math.ceil(total / MIB)

    @property
    def memory_limit(self) -> int:
        """MiB: the request with the planner's headroom kept free, plus /dev/shm."""
        return math.ceil(self.memory_request / (1 - self.headroom)) + SHM_SIZE // MIB

    @property
    def cpu_request(self) -> int:
        """Millicores: the planner's reserve for the node process + CPU per session x MAX."""
        cores = planner.RESERVE_CPU + self.figures.session_cpu * self.max_sessions
        return math.ceil(cores * 100) * 10

    @property
    def handoff_rounds(self) -> int:
        return math.ceil(self.max_sessions / HANDOFF_PARALLELISM)

    @property
    def drain_seconds(self) -> float:
        """A full node's SIGTERM drain as measured: hand-offs, then the gRPC server's grace."""
        return self.handoff_rounds * self.figures.handoff_seconds + self.shutdown_grace

    @property
    def grace_seconds(self) -> int:
        """terminationGracePeriodSeconds: the drain with a margin, then closing."""
        handoffs = self.handoff_rounds * self.figures.handoff_seconds * DRAIN_SAFETY
        return math.ceil(handoffs + self.shutdown_grace + CLOSE_SECONDS)

    @property
    def sessions_target(self) -> int:
        """Sessions per node the autoscaler aims at: MAX with the planner's headroom free."""
        return max(1, math.floor(self.max_sessions * (1 - self.headroom)))

    @property
    def scale_down_period(self) -> int:
        """Seconds between two scale-downs: a node's drain and its sessions' failover."""
        seconds = self.grace_seconds + self.figures.failover_seconds
        rounded = math.ceil(seconds / SCALE_DOWN_ROUNDING) * SCALE_DOWN_ROUNDING
        return max(SCALE_DOWN_MIN_PERIOD, rounded)


@dataclass(frozen=True)
class Overlay:
    name: str
    autoscale: tuple[int, int] | None = None  # min, max nodes; None: a fixed count


OVERLAYS = (
    Overlay("single"),
    # At least the planner's cluster floor (§5 Phase 3: 3-5 nodes); the ceiling is yours.
    Overlay("cluster", autoscale=(planner.CLUSTER_MIN_NODES, 20)),
)


def node_pod(overlay: Overlay, figures: Figures) -> NodePod:
    env = read_env(K8S / "base" / "node.env", K8S / "overlays" / overlay.name / "node.env")
    return NodePod(
        max_sessions=int(env["MAX_CONCURRENT_SESSIONS"]),
        figures=figures,
        shutdown_grace=float(env["SHUTDOWN_GRACE"]),
    )


# -- rendering -------------------------------------------------------------------------------

HEADER = """\
# Rendered by deploy/k8s/render.py from docs/benchmarks.md and node.env: do not edit.
# `make deploy-render` rewrites it; tests/deploy fail while it differs from what it renders.
"""


def _g(value: float) -> str:
    return f"{value:.4g}"


def derivation(pod: NodePod) -> str:
    f, n = pod.figures, pod.max_sessions
    return f"""\
#
# memory request = node process {_g(NODE_PROCESS_MEMORY / MIB)} MiB + Chromium with no session \
{_g(f.browser_base / MIB)} MiB
#                  + {_g(f.session_memory / MIB)} MiB per session x MAX_CONCURRENT_SESSIONS {n}
#                = {pod.memory_request} MiB
# memory limit   = request / (1 - headroom {_g(pod.headroom)}) + /dev/shm {SHM_SIZE // MIB} MiB \
= {pod.memory_limit} MiB
# cpu request    = reserve {_g(planner.RESERVE_CPU)} cores + {_g(f.session_cpu)} cores per session \
x {n} = {pod.cpu_request}m
#                  (no CPU limit: throttling would turn a scan's or a restore's burst into QR
#                  latency; the request already reserves the modelled share)
# drain          = ceil({n} / {HANDOFF_PARALLELISM} hand-offs at once) x {_g(f.handoff_seconds)} s \
+ SHUTDOWN_GRACE {_g(pod.shutdown_grace)} s = {pod.drain_seconds:.1f} s
#                  ({f.handoff_source}, docs/benchmarks.md)
# grace period   = {_g(DRAIN_SAFETY)} x {pod.handoff_rounds} x {_g(f.handoff_seconds)} s + \
{_g(pod.shutdown_grace)} s + {_g(CLOSE_SECONDS)} s to close = {pod.grace_seconds} s
"""


def render_resources(pod: NodePod) -> str:
    return (
        HEADER
        + derivation(pod)
        + f"""\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: mesh-node
spec:
  template:
    spec:
      terminationGracePeriodSeconds: {pod.grace_seconds}
      containers:
        - name: node
          resources:
            requests:
              cpu: {pod.cpu_request}m
              memory: {pod.memory_request}Mi
            limits:
              memory: {pod.memory_limit}Mi
      volumes:
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {SHM_SIZE // MIB}Mi
"""
    )


def render_autoscaling(pod: NodePod, bounds: tuple[int, int]) -> str:
    low, high = bounds
    f = pod.figures
    return (
        HEADER
        + f"""\
#
# target         = MAX_CONCURRENT_SESSIONS {pod.max_sessions} x (1 - headroom {_g(pod.headroom)}) \
= {pod.sessions_target} sessions per node
# replicas       = {low} (the planner's cluster floor) to {high}
# scale-down     = one node per {pod.scale_down_period} s: its grace period {pod.grace_seconds} s \
+ failover p95 {_g(f.failover_seconds)} s,
#                  rounded up to {SCALE_DOWN_ROUNDING} s; the node drains on SIGTERM before it stops
# (a JSON patch: kustomize would replace, not merge, a custom resource's lists)
- op: add
  path: /spec/minReplicaCount
  value: {low}
- op: add
  path: /spec/maxReplicaCount
  value: {high}
- op: add
  path: /spec/advanced/horizontalPodAutoscalerConfig/behavior/scaleDown
  value:
    stabilizationWindowSeconds: 600
    selectPolicy: Min
    policies:
      - type: Pods
        value: 1
        periodSeconds: {pod.scale_down_period}
- op: add
  path: /spec/triggers/0/metadata/threshold
  value: "{pod.sessions_target}"
"""
    )


def rendered(figures: Figures) -> dict[Path, str]:
    """Every rendered file, by path, for these figures."""
    out: dict[Path, str] = {}
    for overlay in OVERLAYS:
        pod = node_pod(overlay, figures)
        folder = K8S / "overlays" / overlay.name
        out[folder / "node-resources.yaml"] = render_resources(pod)
        if overlay.autoscale is not None:
            out[folder / "node-autoscaling.yaml"] = render_autoscaling(pod, overlay.autoscale)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    try:
        files = rendered(parse_figures(BENCHMARKS.read_text()))
    except FigureMissing as e:
        print(f"render: {e}", file=sys.stderr)
        return 2
    stale = 0
    for path, text in files.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        rel = path.relative_to(ROOT)
        if args.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), text.splitlines(True), f"{rel} (committed)",
                    f"{rel} (rendered)",
                )
            )  # fmt: skip
        else:
            path.write_text(text)
            print(f"render: wrote {rel}")
    if stale:
        print(f"render: {stale} file(s) differ; run `make deploy-render`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
