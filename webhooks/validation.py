"""Checks on webhook input; each bad field raises InvalidWebhook naming it."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

from yarl import URL

from sessionmesh.validation import InvalidArgument, check_session_id
from webhooks.errors import InvalidWebhook
from webhooks.model import EVENTS

MAX_URL = 2048
MAX_HEADERS = 20
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 1024
MAX_HEADERS_BYTES = 8192
MAX_IDS = 1000
SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
_ID = re.compile(r"^(wh|msg)_[A-Za-z0-9]{1,60}$")
# Set by the mesh on every delivery, or by the HTTP client: a webhook may not override them.
RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "host",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)
RESERVED_PREFIXES = ("webhook-", "x-webhook-")


def check_url(value: str, field: str = "url") -> str:
    if not value:
        raise InvalidWebhook(field, "is required")
    if len(value) > MAX_URL:
        raise InvalidWebhook(field, f"is {len(value)} characters; at most {MAX_URL} are allowed")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise InvalidWebhook(field, "may not hold spaces or control characters")
    try:
        url = URL(value)
        port = url.port
    except (ValueError, TypeError):
        raise InvalidWebhook(field, "is not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise InvalidWebhook(field, "must be an http:// or https:// URL")
    if not url.host:
        raise InvalidWebhook(field, "has no host")
    if url.user is not None or url.password is not None:
        raise InvalidWebhook(field, "may not hold credentials; send them in headers")
    if url.fragment:
        raise InvalidWebhook(field, "may not hold a #fragment")
    if port is not None and not 0 < port < 65536:
        raise InvalidWebhook(field, "has a bad port")
    return value


def check_events(values: Iterable[str], field: str = "events") -> tuple[str, ...]:
    chosen: list[str] = []
    for value in values:
        if value not in EVENTS:
            raise InvalidWebhook(
                field, f"unknown event {value[:40]!r}; choose from {', '.join(EVENTS)}"
            )
        if value not in chosen:
            chosen.append(value)
    if not chosen:
        raise InvalidWebhook(field, f"name at least one of {', '.join(EVENTS)}")
    return tuple(chosen)


def check_headers(headers: Mapping[str, str], field: str = "headers") -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise InvalidWebhook(field, f"has {len(headers)} entries; at most {MAX_HEADERS}")
    total = 0
    seen: set[str] = set()
    for name, value in headers.items():
        label = f"{field}[{name[:MAX_HEADER_NAME]!r}]"
        if not name or len(name) > MAX_HEADER_NAME or not _TOKEN.match(name):
            raise InvalidWebhook(
                label, f"name must be 1-{MAX_HEADER_NAME} characters of an HTTP token"
            )
        lower = name.lower()
        if lower in RESERVED or lower.startswith(RESERVED_PREFIXES):
            raise InvalidWebhook(label, "is set by the mesh and cannot be overridden")
        if lower in seen:
            raise InvalidWebhook(label, "is given twice")
        seen.add(lower)
        if len(value) > MAX_HEADER_VALUE:
            raise InvalidWebhook(label, f"value is longer than {MAX_HEADER_VALUE} characters")
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F or ord(c) > 0x7E for c in value):
            raise InvalidWebhook(label, "value may hold only printable ASCII (no CR, LF or NUL)")
        total += len(name) + len(value) + 4
    if total > MAX_HEADERS_BYTES:
        raise InvalidWebhook(field, f"take {total} bytes; at most {MAX_HEADERS_BYTES}")
    return dict(headers)


def check_secret(value: str, field: str = "secret") -> str:
    """`whsec_` + standard base64 of 24-64 random bytes (the Standard Webhooks form)."""
    if not value.startswith(SECRET_PREFIX):
        raise InvalidWebhook(field, f"must start with {SECRET_PREFIX}")
    try:
        raw = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidWebhook(field, f"must be {SECRET_PREFIX} + standard base64") from None
    low, high = SECRET_BYTES
    if not low <= len(raw) <= high:
        raise InvalidWebhook(field, f"must decode to {low}-{high} bytes, not {len(raw)}")
    return value


def check_session(value: str, field: str = "session_id") -> str:
    """Empty (every session of the tenant) or a session id."""
    if not value:
        return ""
    try:
        return check_session_id(value, field)
    except InvalidArgument as e:
        raise InvalidWebhook(field, str(e).split(": ", 1)[-1]) from None


def check_id(value: str, field: str = "id", kind: str = "wh") -> str:
    if not value:
        raise InvalidWebhook(field, "is required")
    if not _ID.match(value) or not value.startswith(kind + "_"):
        raise InvalidWebhook(field, f"is not a {'webhook' if kind == 'wh' else 'delivery'} id")
    return value


def check_ids(values: Iterable[str], field: str = "ids") -> list[str]:
    ids = list(dict.fromkeys(values))
    if len(ids) > MAX_IDS:
        raise InvalidWebhook(field, f"names {len(ids)} deliveries; at most {MAX_IDS} at once")
    for value in ids:
        check_id(value, field, kind="msg")
    return ids
