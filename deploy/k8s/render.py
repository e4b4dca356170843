"""Node pod sizing for the Kubernetes overlays, from the tier planner's figures.

    .venv/bin/python deploy/k8s/render.py           # rewrite the overlays' rendered patches
    .venv/bin/python deploy/k8s/render.py --check   # exit 1 if a committed patch differs

One model, the tier planner's (`console.fit.model`): fitted from the load test's
docs/loadtest.json when it exists, else docs/benchmarks.md's per-session figures. Each overlay
is a planner input (users, active share, node size); the planner's plan for it gives
MAX_CONCURRENT_SESSIONS (written to overlays/NAME/node-sizing.env), the pod's memory and CPU
(the model at that many sessions), and the node count or the autoscaler's bounds, exactly as the
console's planner page shows them for the same input. The drain time, and so
terminationGracePeriodSeconds and the autoscaler's scale-down pace, come from the hand-off and
failover figures in docs/benchmarks.md. Each rendered file carries its derivation.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from console import fit, planner
from node.host import HANDOFF_PARALLELISM

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
LOADTEST = ROOT / "docs" / "loadtest.json"
MIB = planner.MIB

# The node process beside Chromium, with no session (console/planner.py says where it was
# measured). A load test's fitted base includes it; docs/benchmarks.md's figures do not.
NODE_PROCESS_MEMORY = planner.NODE_PROCESS_MEMORY
SHM_SIZE = planner.SHM_SIZE  # /dev/shm (console/planner.py says why it stays small)
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
    """The planner's model, and the drain figures docs/benchmarks.md measured."""

    model: planner.Figures  # memory and CPU = base + per session x sessions
    model_source: str
    browser_base: float | None  # bytes: Chromium with no session; None: inside a fitted base
    handoff_seconds: float  # one session's hand-off (final snapshot, close, lease released)
    handoff_source: str
    failover_seconds: float  # kill -> READY elsewhere, p95, default settings

    @property
    def session_memory(self) -> float:
        return self.model.memory_bytes

    @property
    def session_cpu(self) -> float:
        return self.model.cpu_cores


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


def parse_figures(text: str, report: fit.LoadReport | None = None) -> Figures:
    """The model and drain figures: the load test's fitted model when `report` is given, else
    docs/benchmarks.md's per-session figures; FigureMissing names any gap."""
    if report is not None:
        model = fit.fit(report)
        where = Path(report.path)
        shown = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where.name
        source, base = f"the load test, {shown}", None
    else:
        memory, cpu = planner.parse_benchmarks(text)
        if memory is None or cpu is None:
            raise FigureMissing(
                "docs/benchmarks.md states no `per-session memory: N MiB; per-session CPU: N "
                "cores` line (bench/qr_latency.py writes it)"
            )
        base = planner.parse_browser_base(text)
        if base is None:
            raise FigureMissing(
                "docs/benchmarks.md has no `with no session` column (Chromium's own memory)"
            )
        model = planner.benchmark_figures(text)
        source = "docs/benchmarks.md"
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
        model=model,
        model_source=source,
        browser_base=base,
        handoff_seconds=handoff,
        handoff_source=handoff_source,
        failover_seconds=_number(failover["default"]["p95"], "failover p95"),
    )


def current_figures() -> Figures:
    """The figures from the committed files: docs/loadtest.json when it exists."""
    try:
        report = fit.load_report(LOADTEST)
    except fit.ReportError as e:
        raise FigureMissing(f"docs/loadtest.json: {e}") from e
    return parse_figures(BENCHMARKS.read_text(), report)


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
    def size(self) -> planner.PodSize:
        """Memory, CPU and the autoscaler's target: the planner's own `pod_size`."""
        return planner.pod_size(self.figures.model, self.max_sessions, self.headroom)

    @property
    def memory_request(self) -> int:
        """MiB: the model at MAX_CONCURRENT_SESSIONS: base + memory per session x MAX."""
        return self.size.memory_request

    @property
    def memory_limit(self) -> int:
        """MiB: the request with the planner's headroom kept free, plus /dev/shm."""
        return self.size.memory_limit

    @property
    def cpu_request(self) -> int:
        """Millicores: the model at MAX: base + CPU per session x MAX."""
        return self.size.cpu_request

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
        return self.size.sessions_target

    @property
    def scale_down_period(self) -> int:
        """Seconds between two scale-downs: a node's drain and its sessions' failover."""
        seconds = self.grace_seconds + self.figures.failover_seconds
        rounded = math.ceil(seconds / SCALE_DOWN_ROUNDING) * SCALE_DOWN_ROUNDING
        return max(SCALE_DOWN_MIN_PERIOD, rounded)


@dataclass(frozen=True)
class Overlay:
    """An overlay as a tier-planner input: the node size and the users it is sized for."""

    name: str
    users: int
    active_share: float
    cores: float
    ram_gb: float
    autoscale: bool = False  # False: a fixed node count


OVERLAYS = (
    # The seed's Scenario A (§2.2): 1000 users, 5% active, on its upgraded single server
    # (§2.2 A: 8 cores, 16 GB). One node must hold them all, or the overlay is the wrong one.
    Overlay("single", users=1000, active_share=0.05, cores=8, ram_gb=16),
    # The seed's Scenario B (§2.2): 3000 users, 10% active, on its 4-core / 8 GB VPS (§2.1).
    Overlay("cluster", users=3000, active_share=0.10, cores=4, ram_gb=8, autoscale=True),
)


def overlay_plan(overlay: Overlay, figures: Figures) -> planner.Plan:
    """The planner's plan for the overlay's input, as the console's planner page makes it."""
    return planner.plan(
        overlay.users,
        overlay.active_share,
        overlay.cores,
        overlay.ram_gb,
        planner.REMOTE if overlay.autoscale else planner.LOCAL,
        figures.model,
    )


def node_pod(overlay: Overlay, figures: Figures) -> NodePod:
    env = read_env(K8S / "base" / "node.env", K8S / "overlays" / overlay.name / "node.env")
    plan = overlay_plan(overlay, figures)
    return NodePod(
        max_sessions=plan.capacity.sessions,
        figures=figures,
        shutdown_grace=float(env["SHUTDOWN_GRACE"]),
    )


# -- rendering -------------------------------------------------------------------------------

HEADER = """\
# Rendered by deploy/k8s/render.py from the tier planner's model (docs/loadtest.json, else
# docs/benchmarks.md): do not edit. `make deploy-render` rewrites it; tests/deploy fail while it
# differs from what it renders.
"""


def _g(value: float) -> str:
    return f"{value:.4g}"


def plan_lines(overlay: Overlay, plan: planner.Plan, source: str) -> str:
    c = plan.capacity
    qr = "" if c.by_qr is None else f", first QR {c.by_qr}"
    return f"""\
#
# plan           = the tier planner for {overlay.users} users, {overlay.active_share:.0%} active \
({plan.active} accounts),
#                  on {_g(overlay.cores)}-core, {_g(overlay.ram_gb)} GB nodes: {plan.tier.name}, \
{plan.nodes} node(s)
#                  (the console's planner page shows the same for these inputs)
# model          = {source}
# MAX_CONCURRENT_SESSIONS = {c.sessions}: the first limit, {c.bound} (memory allows \
{c.by_memory}, CPU {c.by_cpu}{qr})
""" + (
        ""
        if overlay.autoscale or plan.nodes == 1
        else f"""\
# WARNING: one node holds only {c.sessions} of the {plan.active} active accounts on this model;
#          the planner says {plan.nodes} nodes: use the cluster overlay, or a bigger node here
"""
    )


def derivation(pod: NodePod) -> str:
    f, n = pod.figures, pod.max_sessions
    m = f.model
    if f.browser_base is not None:
        base = (
            f"node process {_g(NODE_PROCESS_MEMORY / MIB)} MiB + Chromium with no session "
            f"{_g(f.browser_base / MIB)} MiB"
        )
    else:
        base = f"fitted base {_g(m.memory_base / MIB)} MiB"
    return f"""\
# memory request = {base}
#                  + {_g(f.session_memory / MIB)} MiB per session x MAX_CONCURRENT_SESSIONS {n}
#                = {pod.memory_request} MiB
# memory limit   = request / (1 - headroom {_g(pod.headroom)}) + /dev/shm {SHM_SIZE // MIB} MiB \
= {pod.memory_limit} MiB
# cpu request    = base {_g(m.cpu_base)} cores + {_g(f.session_cpu)} cores per session \
x {n} = {pod.cpu_request}m
#                  (no CPU limit: throttling would turn a scan's or a restore's burst into QR
#                  latency; the request already reserves the modelled share)
# drain          = ceil({n} / {HANDOFF_PARALLELISM} hand-offs at once) x {_g(f.handoff_seconds)} s \
+ SHUTDOWN_GRACE {_g(pod.shutdown_grace)} s = {pod.drain_seconds:.1f} s
#                  ({f.handoff_source}, docs/benchmarks.md)
# grace period   = {_g(DRAIN_SAFETY)} x {pod.handoff_rounds} x {_g(f.handoff_seconds)} s + \
{_g(pod.shutdown_grace)} s + {_g(CLOSE_SECONDS)} s to close = {pod.grace_seconds} s
"""


def render_resources(pod: NodePod, overlay: Overlay, plan: planner.Plan) -> str:
    replicas = "" if overlay.autoscale else "\n  replicas: 1"
    return (
        HEADER
        + plan_lines(overlay, plan, pod.figures.model_source)
        + derivation(pod)
        + f"""\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: mesh-node
spec:{replicas}
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


def render_env(pod: NodePod) -> str:
    return (
        HEADER
        + "# MAX_CONCURRENT_SESSIONS: the planner's sessions per node (node-resources.yaml says why)\n"
        + f"MAX_CONCURRENT_SESSIONS={pod.max_sessions}\n"
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
# replicas       = {low} (the planner's nodes: need + spare) to {high} (the nodes for \
{planner.AUTOSCALE_GROWTH} x the active accounts)
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
        plan = overlay_plan(overlay, figures)
        folder = K8S / "overlays" / overlay.name
        out[folder / "node-resources.yaml"] = render_resources(pod, overlay, plan)
        out[folder / "node-sizing.env"] = render_env(pod)
        if overlay.autoscale:
            out[folder / "node-autoscaling.yaml"] = render_autoscaling(pod, plan.replicas)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    try:
        files = rendered(current_figures())
    except (FigureMissing, fit.ReportError) as e:
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
