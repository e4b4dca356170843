"""Finding and launching Chromium: Playwright's own build where installed, else the system's."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Chromium's own calls home fail by the dozen on a closed network; these stop them.
QUIET_ARGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
# Pages must not see an automated browser: WhatsApp Web answers one with "update your browser".
STEALTH_ARGS = ("--disable-blink-features=AutomationControlled",)
# The headless shell first: it is what Playwright itself runs headless, and it starts a session's
# page on about a third of the CPU the full browser's headless mode needs (docs/benchmarks.md).
HEADLESS_SHELLS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium-headless-shell")
SYSTEM_CANDIDATES = (
    *HEADLESS_SHELLS,
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
)


def launch_args() -> list[str]:
    args = [*QUIET_ARGS, *STEALTH_ARGS]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def executable_path(explicit: str | None = None) -> str | None:
    """The Chromium to launch: `explicit` (CHROMIUM_PATH), None for Playwright's own, else the
    system's (Debian's headless shell, else its full Chromium).

    None means Playwright's bundled build exists and should be used.
    """
    if explicit:
        if not Path(explicit).exists():
            raise FileNotFoundError(f"CHROMIUM_PATH {explicit!r} does not exist")
        return explicit
    if _playwright_chromium_installed():
        return None
    for candidate in SYSTEM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    raise FileNotFoundError(
        "no Chromium found: run `make setup` (Playwright's download, else Debian's chromium) "
        "or set CHROMIUM_PATH"
    )


def _playwright_chromium_installed() -> bool:
    root = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache/ms-playwright")
    if not root.is_dir():
        return False
    return any(
        (d / "chrome-linux" / "chrome").exists() or (d / "chrome-linux64" / "chrome").exists()
        for d in root.glob("chromium-*")
    )


@dataclass(frozen=True)
class Identity:
    """What a page sees of the browser: a desktop Chrome's user agent and matching client hints."""

    user_agent: str
    metadata: dict[str, Any]

    def override(self) -> dict[str, Any]:
        """Parameters of DevTools' Emulation.setUserAgentOverride."""
        return {"userAgent": self.user_agent, "userAgentMetadata": self.metadata}


def desktop_identity(version: str) -> Identity:
    """A desktop Chrome on Linux of the running browser's version (the headless shell says
    `HeadlessChrome` in its user agent, its `sec-ch-ua` and `navigator.userAgentData`)."""
    major = version.split(".", 1)[0]
    if not major.isdigit():
        raise ValueError(f"not a Chromium version: {version!r}")
    # Chrome's reduced user agent: the major version only.
    user_agent = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )
    brands = [("Google Chrome", major), ("Chromium", major), ("Not_A Brand", "24")]
    full = [("Google Chrome", version), ("Chromium", version), ("Not_A Brand", "24.0.0.0")]
    metadata = {
        "brands": [{"brand": b, "version": v} for b, v in brands],
        "fullVersionList": [{"brand": b, "version": v} for b, v in full],
        "fullVersion": version,
        "platform": "Linux",
        "platformVersion": "",
        "architecture": "x86",
        "bitness": "64",
        "model": "",
        "mobile": False,
        "wow64": False,
    }
    return Identity(user_agent, metadata)
