"""Memory of the node's Chromium, read from /proc: PSS, so shared pages are counted once."""

from __future__ import annotations

import os
import time
from pathlib import Path

_PROC = Path("/proc")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = _PROC / str(pid) / "task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return kids
    for tid in tids:
        try:
            kids.extend(int(c) for c in (task_dir / tid / "children").read_text().split())
        except OSError:
            continue
    return kids


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = _children(pid)
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(_children(child))
    return found


def _rollup(pid: int, field: str) -> int:
    """One field of /proc/PID/smaps_rollup in bytes; 0 when the process is gone."""
    try:
        for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pss_bytes(pid: int) -> int:
    return _rollup(pid, "Pss")


def rss_bytes(pid: int) -> int:
    return _rollup(pid, "Rss")


def _is_browser(pid: int) -> bool:
    try:
        cmd = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    first = cmd.split(b"\0", 1)[0]
    return b"chrom" in first.lower()


def browser_pss(root_pid: int | None = None) -> int:
    """PSS of every Chromium process below `root_pid` (default: this process)."""
    pids = descendants(root_pid if root_pid is not None else os.getpid())
    return sum(pss_bytes(p) for p in pids if _is_browser(p))


class BrowserMemory:
    """`browser_pss()` recomputed at most every `ttl` seconds: routers poll node status every
    second and metrics are scraped too, and walking /proc costs a read per Chromium process."""

    def __init__(self, ttl: float = 2.0) -> None:
        self._ttl = ttl
        self._at = -float("inf")
        self._value = 0

    def get(self) -> int:
        now = time.monotonic()
        if now - self._at >= self._ttl:
            self._value, self._at = browser_pss(), now
        return self._value
