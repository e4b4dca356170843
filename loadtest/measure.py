"""What the load test samples from /proc: a process tree's PSS and CPU, the machine's memory and load."""

from __future__ import annotations

import os
from pathlib import Path

from node.memory import descendants, pss_bytes

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def tree_pss(pid: int) -> int:
    """PSS (smaps_rollup) of `pid` and every process below it: a node and its Chromium."""
    return sum(pss_bytes(p) for p in tree(pid))


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, with reaped children) used so far by `pid` and its tree."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICK


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        out[name] = int(rest.split()[0]) * 1024
    return out


def memory_headroom() -> float:
    """MemAvailable / MemTotal: the share of the machine's memory still free for more sessions."""
    info = meminfo()
    return info["MemAvailable"] / info["MemTotal"]


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / TICK, total / TICK
