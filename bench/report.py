"""Shared by the benchmarks: percentiles, a machine description, and docs/benchmarks.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Figures written by `make bench` (scripts under `bench/`). Each section says the machine and the
command that measured it; compare figures within one section, measured in one run: these
machines are shared and noisy.
"""


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    chromium = _chromium_version()
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, {chromium}; "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; load average {os.getloadavg()[0]:.1f} "
        "at the start (other work on the machine shares its cores)"
    )


def _chromium_version() -> str:
    from sessionmesh.chromium import executable_path

    try:
        path = executable_path()
        if path is None:
            return "Playwright's Chromium"
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
        return f"{out.stdout.strip() or 'Chromium (version unknown)'} ({path})"
    except (OSError, subprocess.SubprocessError, FileNotFoundError):
        return "Playwright's Chromium"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md."""
    DOC.parent.mkdir(exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    DOC.write_text(text)
