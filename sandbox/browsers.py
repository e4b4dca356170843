"""Which browsers get the app: WhatsApp Web answers headless and outdated ones with an "update
your browser" page. The page repeats these checks on `navigator` (static/gate.js)."""

from __future__ import annotations

import re

MIN_CHROME = 120
MIN_FIREFOX = 115
MIN_SAFARI = 15

_CHROME = re.compile(r"\b(?:Chrome|CriOS)/(\d+)")
_FIREFOX = re.compile(r"\bFirefox/(\d+)")
_SAFARI = re.compile(r"\bVersion/(\d+)(?:\.\d+)*(?: Mobile/\S+)? Safari/")
_BRAND = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"(\d+)')
CHROMIUM_BRANDS = ("Chromium", "Google Chrome", "Microsoft Edge")


def refusal(user_agent: str, client_hints: str | None) -> str | None:
    """Why this browser gets the update page (from its User-Agent and Sec-CH-UA headers), or
    None when it gets the app."""
    if "HeadlessChrome" in user_agent:
        return "a headless browser"
    if client_hints:
        for brand, version in _BRAND.findall(client_hints):
            if brand == "HeadlessChrome":
                return "a headless browser (client hints)"
            if brand in CHROMIUM_BRANDS and int(version) < MIN_CHROME:
                return f"{brand} {version} is older than {MIN_CHROME} (client hints)"
    chrome = _CHROME.search(user_agent)
    if chrome is not None:
        if int(chrome[1]) < MIN_CHROME:
            return f"Chrome {chrome[1]} is older than {MIN_CHROME}"
        return None
    firefox = _FIREFOX.search(user_agent)
    if firefox is not None:
        return None if int(firefox[1]) >= MIN_FIREFOX else f"Firefox {firefox[1]} is too old"
    safari = _SAFARI.search(user_agent)
    if safari is not None:
        return None if int(safari[1]) >= MIN_SAFARI else f"Safari {safari[1]} is too old"
    return "not a supported browser"
