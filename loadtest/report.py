"""The load test's report: `loadtest.json` (the planner reads it), `loadtest.md` and its PNG plots."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtest.console_timing import CALL_REPEATS

MIB = 2**20


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1], 3)


def machine_readable(r: dict[str, Any]) -> dict[str, Any]:
    """Exactly the fields the planner reads, nothing else."""
    b, cp = r["browser"], r["control_plane"]
    return {
        "generated": r["generated"],
        "command": r["command"],
        "profile": r["profile"],
        "machine": {k: r["machine"][k] for k in ("cores", "memory_bytes", "load_before")},
        "page_weight": r["page_weight"],
        "browser": {
            "limit": b["limit"],
            "sessions_per_node": b["sessions_per_node"],
            "thresholds": b["thresholds"],
            "samples": [
                {k: s[k] for k in ("sessions", "memory_bytes", "cpu_cores", "first_qr_p95_s")}
                for s in b["samples"]
                if s["sessions"] > 0 and s["first_qr_p95_s"] is not None
            ],
        },
        "control_plane": {
            k: cp[k]
            for k in (
                "users",
                "active_accounts",
                "browser_sessions",
                "simulated_sessions",
                "success_rate",
                "first_qr_s",
                "ready_s",
                "redis_ops_per_s",
                "failover_s",
                "router_cpu_cores",
                "router_memory_bytes",
            )
        },
        "console_pages_s": r["console_pages_s"],
        "console_calls_s": r.get("console_calls_s", {}),
    }


def _plot_sessions(r: dict[str, Any], path: Path) -> None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    ramp = r["browser"]["samples"]
    a1.step([s["t"] for s in ramp], [s["sessions"] for s in ramp], where="post")
    a1.set(title="Browser ramp: READY sessions on one node", xlabel="s", ylabel="sessions")
    rows = r["control_plane"]["rows"]
    nodes = sorted({n for row in rows for n in row["sessions"]})
    for n in nodes:
        a2.plot([row["t"] for row in rows], [row["sessions"].get(n, 0) for row in rows],
                label=n + (" (simulated)" if n.startswith("sim-") else ""))  # fmt: skip
    fo = r["control_plane"]["failover"]
    a2.axvline(fo["at_s"], color="red", linestyle="--", label=f"kill -9 {fo['victim']}")
    a2.set(title="Control plane: sessions per node", xlabel="s", ylabel="sessions")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_latency(r: dict[str, Any], path: Path) -> None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    ramp = [s for s in r["browser"]["samples"] if s["first_qr_p95_s"] is not None]
    a1.plot([s["sessions"] for s in ramp], [s["first_qr_p95_s"] for s in ramp], marker="o")
    a1.axhline(r["browser"]["thresholds"]["first_qr_p95_s"], color="red", linestyle="--",
               label="limit")  # fmt: skip
    a1.set(title="Browser ramp: first-QR p95 per step", xlabel="READY sessions", ylabel="s")
    a1.legend(fontsize=7)
    cp = r["control_plane"]
    labels = ["p50", "p95", "p99"]
    x = range(len(labels))
    for i, (name, key) in enumerate((("first QR", "first_qr_s"), ("READY", "ready_s"))):
        vals = [cp[key][p] or 0.0 for p in labels]
        a2.bar([v + i * 0.4 for v in x], vals, width=0.4, label=name)
    a2.set_xticks([v + 0.2 for v in x], labels)
    a2.set(title="Control plane: latency percentiles", ylabel="s")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_memory(r: dict[str, Any], path: Path) -> None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    ramp = r["browser"]["samples"]
    a1.plot([s["sessions"] for s in ramp], [s["memory_bytes"] / MIB for s in ramp], marker="o")
    a1.set(title="Browser ramp: node + Chromium PSS", xlabel="READY sessions", ylabel="MiB")
    rows = r["control_plane"]["rows"]
    names = sorted({n for row in rows for n in row["procs"]})
    for n in names:
        pts = [(row["t"], row["procs"][n]["pss"] / MIB) for row in rows if n in row["procs"]]
        a2.plot([p[0] for p in pts], [p[1] for p in pts],
                label=n + (" (simulated)" if n.startswith("sim-") else ""))  # fmt: skip
    a2.set(title="Control plane: PSS per process tree", xlabel="s", ylabel="MiB")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _locust_table(csv_path: Path) -> str:
    if not csv_path.exists():
        return "(no Locust stats)\n"
    lines = ["| type | name | requests | failures | median ms | p95 ms | p99 ms |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            lines.append(
                f"| {row['Type']} | {row['Name']} | {row['Request Count']} | "
                f"{row['Failure Count']} | {row['Median Response Time']} | {row['95%']} | "
                f"{row['99%']} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(v: float | None, unit: str = " s") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.2f}{unit}"


def write(r: dict[str, Any], out: Path) -> None:
    assets = out / "loadtest"
    assets.mkdir(parents=True, exist_ok=True)
    (out / "loadtest.json").write_text(json.dumps(machine_readable(r), indent=2) + "\n")
    _plot_sessions(r, assets / "sessions.png")
    _plot_latency(r, assets / "latency.png")
    _plot_memory(r, assets / "memory.png")
    (out / "loadtest.md").write_text(markdown(r))


def markdown(r: dict[str, Any]) -> str:
    b, cp, m = r["browser"], r["control_plane"], r["machine"]
    fo = cp["failover"]
    smoke = r["profile"] == "smoke"
    ramp_rows = "\n".join(
        f"| {s['sessions']} | {s['memory_bytes'] / MIB:.0f} MiB | {s['cpu_cores']:.2f} | "
        f"{_fmt(s.get('link_cpu_cores'), '')} | "
        f"{_fmt(s['first_qr_p95_s'])} | {s['headroom']:.0%} | {s.get('load1', '')} | "
        f"{s.get('linked', '')} | {s.get('lease_lapses', '')} | "
        f"{'yes' if s.get('within_limits', True) else 'no'} |"
        for s in b["samples"]
    )
    per_session = ""
    # Steps before any session was closed by a lapsed lease: the node held what it linked.
    pts = [s for s in b["samples"] if s["sessions"] > 0 and not s.get("lease_lapses")]
    if pts and b["samples"][0]["sessions"] == 0:
        last = pts[-1]
        slope = (last["memory_bytes"] - b["samples"][0]["memory_bytes"]) / last["sessions"]
        per_session = (
            f"\nFrom the baseline (no session) to the last step: {slope / MIB:.0f} MiB PSS per "
            f"READY session, on top of {b['samples'][0]['memory_bytes'] / MIB:.0f} MiB for the "
            "node and its warm browser.\n"
        )
    pages = "\n".join(
        f"| {name} | {_fmt(s)} | {'yes' if s is not None and s <= 3.0 else 'NO'} |"
        for name, s in r["console_pages_s"].items()
    )
    calls = "\n".join(
        f"| {name} | {_fmt(None if s is None else s * 1000, ' ms')} |"
        for name, s in r.get("console_calls_s", {}).items()
    )
    if calls:
        calls = (
            "\nThe router calls those pages make, timed right after them as the console's client "
            f"makes them (median of {CALL_REPEATS}): what a slow page waited on.\n\n"
            "| call | median |\n|---|---:|\n" + calls + "\n"
        )
    split_rows = "\n".join(
        f"| {side} | "
        + " | ".join(
            " / ".join(_fmt(cp["split"][side][kind][p]) for p in ("p50", "p95", "p99"))
            for kind in ("first_qr", "ready")
        )
        + " |"
        for side in ("browser", "simulated")
    )
    header = "# Load test\n\n"
    if smoke:
        header += (
            "**Smoke run (tests only): light page, a handful of sessions. These figures say "
            "nothing about capacity.**\n\n"
        )
    return f"""{header}Written by `{r["command"]}` on {r["generated"]} (took {r["duration_s"]} s).
Machine: {m["cores"]} cores, {m["memory_bytes"] / 2**30:.1f} GiB; 1-minute load average
{m["load_before"]} at the start and {m["load_after"]} at the end. This machine is shared with
other work, so CPU and latency figures carry that load. Page weight: `{r["page_weight"]}`.
The machine-readable figures are in `loadtest.json`; Locust's CSV stats in `loadtest/`.

## 1. Browser-backed capacity (real Chromium, one node)

Accounts are added {b["step"]} per step through the router, one at a time: each links (the
sandbox's phone scans its QR) and reaches READY before the next arrives, and keeps sending and
receiving messages while the ramp goes on. The first-QR p95 of a step is over that step's
arrivals. Past a latency or CPU limit the ramp goes on to its time cap, to map memory and CPU
(rows marked "no"); it stops at the memory limit. Limits: first-QR p95 above
{b["thresholds"]["first_qr_p95_s"]} s, machine memory headroom under
{b["thresholds"]["memory_headroom"]:.0%}, or the node and its Chromium using
{b["thresholds"]["cpu_saturation"]:.0%} of the cores; otherwise the ramp's time cap
(`ramp_end`). The CPU a step is judged by is read after its links have settled, over a window
while the node holds its READY sessions and their messages: linking one account after another
keeps a node near saturation at any count, so the CPU while linking is shown beside it but
judges nothing (the first-QR limit judges linking).

**Limit hit: `{b["limit"]}`; READY sessions held within the limits: {b["sessions_per_node"]}.**
Links: {b["links_ready"]} of {b["links_attempted"]} reached READY. Sessions the node closed
because their Redis lease lapsed while it was starved of CPU: {b["lease_lapses"]} (the
"READY sessions" column counts what the node held at the end of each step, not links made).

| READY sessions | node + Chromium PSS | CPU holding them (cores) | CPU while linking the step (cores) | first-QR p95 of the step | memory headroom | load (1 min) | links so far | closed by lease lapse | within limits |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
{ramp_rows}
{per_session}
![memory](loadtest/memory.png)

## 2. Control plane at {cp["users"]} users (browser-backed and simulated sessions)

{cp["active_accounts"]} active accounts ({cp["active_accounts"] / cp["users"]:.0%} of
{cp["users"]} users). Two routers, two browser-backed nodes holding at most
{cp["browser_per_node_cap"]} sessions each (what the ramp found room for, capped by the
profile), and simulated nodes (`loadtest/simnode.py`: the node's gRPC API and Redis membership,
no browser, no snapshots, leases, directory entries or event streams in Redis) for the rest.
**Simulated:** {cp["simulated_sessions"]} sessions at most, on `sim-*` nodes; their QR and
READY times are the simulator's fixed delays plus the control plane's overhead, not a
browser's. **Browser-backed:** {cp["browser_sessions"]} sessions at most, on `node-*`. Because
simulated sessions write nothing to Redis, the Redis rate below is a lower bound for this tier.

| measure | value |
|---|---|
| success rate (links and restores that reached READY) | {cp["success_rate"]:.1%} |
| first QR (CreateSession to QR at the client) p50 / p95 / p99 | {_fmt(cp["first_qr_s"]["p50"])} / {_fmt(cp["first_qr_s"]["p95"])} / {_fmt(cp["first_qr_s"]["p99"])} |
| READY (CreateSession to READY, scan included) p50 / p95 / p99 | {_fmt(cp["ready_s"]["p50"])} / {_fmt(cp["ready_s"]["p95"])} / {_fmt(cp["ready_s"]["p99"])} |
| Redis commands per second (INFO stats, over the run) | {cp["redis_ops_per_s"]:.0f} |
| router-1 CPU (cores, average) / PSS (peak) | {cp["router_cpu_cores"]:.3f} / {cp["router_memory_bytes"] / MIB:.0f} MiB |
| failover: kill -9 of {fo["victim"]} at {fo["at_s"]} s, its READY sessions | {fo["sessions"]} |
| failover: READY again on another node | {fo["recovered"]} of {fo["sessions"]}, all within {_fmt(fo["failover_s"])} (p50 {_fmt(fo["p50_s"])}), on {", ".join(fo["to_nodes"]) or "n/a"} |

What the routers logged about node deaths and failovers (times UTC; the kill was at about
{fo["killed_at"]}). A node declared dead *before* the kill is a false failover: on this machine
under load a live node missed its heartbeats and the router moved its sessions away.

```
{chr(10).join(fo["router_log"]) or "(nothing)"}
```

The QR and READY percentiles above mix browser-backed and simulated sessions (they are what
`loadtest.json` holds for the control plane). Apart:

| sessions | first QR p50 / p95 / p99 | READY p50 / p95 / p99 |
|---|---|---|
{split_rows}

Locust's stats for this phase (gRPC calls through the
interceptor, and the sessions' lifecycle as `session` events):

{_locust_table(Path(r.get("_csv_dir", "")) / "locust-control-plane_stats.csv") if r.get("_csv_dir") else ""}
![sessions](loadtest/sessions.png)

![latency](loadtest/latency.png)

## 3. Console while the load runs

Each page opened in headless Chromium against router-1 during phase 2, timed from the login
click until the page's script finished (goal: 3 s).

| page | render | within 3 s |
|---|---:|---|
{pages}
{calls}"""
