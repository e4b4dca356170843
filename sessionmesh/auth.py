"""API tokens: parsing `MESH_API_TOKENS`, finding a caller's tenant, reading bearer metadata.

`MESH_API_TOKENS` is a comma-separated list of `tenant:token` pairs, for example
`acme:0123456789abcdef0123,globex:fedcba9876543210fedc`. A tenant is 1-64 of
`[A-Za-z0-9_-]`; a token is at least 16 characters with no whitespace or comma and
belongs to exactly one tenant; a tenant may have several tokens (for rotation). Spaces
around entries are ignored and empty entries are skipped. A malformed entry fails at
start-up with a message that names `MESH_API_TOKENS` and the entry's position, never the
token itself.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from sessionmesh.config import ConfigError

TOKENS_VAR = "MESH_API_TOKENS"
MIN_TOKEN_LENGTH = 16
TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_RE = re.compile(r"[^\s,]+")


class TokenTable:
    """Token -> tenant. Its `repr` lists tenants only; lookups compare in constant time."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._entries: tuple[tuple[bytes, str], ...] = tuple(
            (token.encode(), tenant) for tenant, token in entries
        )

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(sorted({tenant for _, tenant in self._entries}))

    def tenant_for(self, token: str) -> str | None:
        """The tenant owning `token`, or None. Every entry is compared, so timing leaks nothing."""
        candidate = token.encode()
        found: str | None = None
        for known, tenant in self._entries:
            if hmac.compare_digest(known, candidate):
                found = tenant
        return found

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TokenTable(tenants={list(self.tenants)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenTable) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(self._entries)


def parse_tokens(raw: str | None, var: str = TOKENS_VAR) -> TokenTable:
    """Parse `tenant:token,...`; raise ConfigError naming `var` (never the token) when malformed."""
    if raw is None or raw.strip() == "":
        raise ConfigError(f"{var} is required: comma-separated tenant:token pairs")
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    for position, item in enumerate(raw.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        tenant, sep, token = item.partition(":")
        tenant, token = tenant.strip(), token.strip()
        if not sep:
            raise ConfigError(f"{var} entry {position} is not of the form tenant:token")
        if not TENANT_RE.fullmatch(tenant):
            raise ConfigError(
                f"{var} entry {position}: the tenant must be 1-64 of letters, digits, '_' and '-'"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{var} entry {position}: the token for tenant {tenant!r} is {len(token)} "
                f"characters; at least {MIN_TOKEN_LENGTH} are required"
            )
        if not _TOKEN_RE.fullmatch(token):
            raise ConfigError(
                f"{var} entry {position}: the token for tenant {tenant!r} contains whitespace"
            )
        if token in seen:
            raise ConfigError(
                f"{var} entry {position}: the token for tenant {tenant!r} is already used "
                "by an earlier entry"
            )
        seen.add(token)
        entries.append((tenant, token))
    if not entries:
        raise ConfigError(f"{var} holds no tenant:token pair")
    return TokenTable(entries)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token in an `authorization: Bearer <token>` metadata entry, or None."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None
