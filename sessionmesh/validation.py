"""Checks on client input shared by the router and the node."""

from __future__ import annotations

import re

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,63}")
MAX_LABELS = 32
MAX_LABEL_VALUE = 256


class InvalidArgument(ValueError):
    """Client input is malformed; `field` names the offending request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_session_id(value: str, field: str = "session_id") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > 64:
        raise InvalidArgument(field, f"is {len(value)} characters; at most 64 are allowed")
    if not SESSION_ID_RE.fullmatch(value):
        raise InvalidArgument(field, "may hold only letters, digits, '_' and '-'")
    return value


def check_labels(labels: dict[str, str], field: str = "labels") -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(field, f"has {len(labels)} entries; at most {MAX_LABELS} are allowed")
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise InvalidArgument(
                f"{field}[{key[:70]!r}]", "key must be 1-63 of letters, digits, '_', '.' and '-'"
            )
        if len(value) > MAX_LABEL_VALUE:
            raise InvalidArgument(f"{field}[{key!r}]", f"value is longer than {MAX_LABEL_VALUE}")
    return labels
