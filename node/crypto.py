"""Snapshot codec: JSON, then zlib, then AES-256-GCM under a key id, so keys can rotate; and
`Sealer`, the same keys for the small records a session keeps beside its snapshot in Redis
(events, the private fields of its directory entry).

Blob layout::

    b"SMS1" | u8 len(kid) | kid (ascii) | 12-byte nonce | ciphertext + 16-byte tag

The associated data is the header (magic, key id) plus the session key (``tenant/session_id``),
so a blob cannot be replayed under another session or relabelled with another key id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sessionmesh.config import ConfigError

MAGIC = b"SMS1"
NONCE_BYTES = 12
KEY_BYTES = 32
ENV_NAME = "MESH_SNAPSHOT_KEY"
# A decompression bomb stops here rather than filling the node's memory.
MAX_PLAIN_BYTES = 512 * 1024 * 1024

_KID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SnapshotError(Exception):
    """A snapshot blob cannot be read: unknown key id, tampering, wrong session or bad format."""


class SnapshotKeys:
    """The snapshot keys by id; the first encrypts, all decrypt. Key bytes never leave here."""

    __slots__ = ("_keys", "_names", "_primary")

    def __init__(self, keys: Mapping[str, bytes], primary: str) -> None:
        if primary not in keys:
            raise ValueError("the primary key id must be one of the keys")
        for kid, key in keys.items():
            if not _KID_RE.fullmatch(kid):
                raise ValueError(f"key id {kid!r} must be 1-64 of letters, digits, '_', '.', '-'")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {kid!r} must be {KEY_BYTES} bytes")
        self._keys = {kid: AESGCM(bytes(key)) for kid, key in keys.items()}
        # For keyed names (HMAC-SHA256), derived so that no key serves two purposes.
        self._names = {
            kid: _derive(bytes(key), b"session-mesh record names") for kid, key in keys.items()
        }
        self._primary = primary

    @property
    def primary(self) -> str:
        return self._primary

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def cipher(self, kid: str) -> AESGCM | None:
        return self._keys.get(kid)

    def name_key(self, kid: str) -> bytes | None:
        return self._names.get(kid)

    def __repr__(self) -> str:
        return f"SnapshotKeys(primary={self._primary!r}, kids={self.kids!r})"

    @classmethod
    def parse(cls, spec: str, *, name: str = ENV_NAME) -> SnapshotKeys:
        """Parse ``kid1:base64key[,kid2:base64key...]``; errors name `name`, never the key."""
        keys: dict[str, bytes] = {}
        primary: str | None = None
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        if not entries:
            raise ConfigError(f"{name} is not set; give it as kid:base64key (32-byte key)")
        for n, entry in enumerate(entries, start=1):
            kid, sep, encoded = entry.partition(":")
            kid = kid.strip()
            if not sep or not _KID_RE.fullmatch(kid):
                raise ConfigError(
                    f"{name} entry {n} must be kid:base64key, with a key id of 1-64 letters, "
                    "digits, '_', '.' or '-'"
                )
            if kid in keys:
                raise ConfigError(f"{name} names key id {kid!r} twice")
            key = _b64decode(encoded.strip())
            if key is None or len(key) != KEY_BYTES:
                raise ConfigError(
                    f"{name} key {kid!r} must be {KEY_BYTES} bytes of base64 "
                    f"(make one with: python -m node.crypto {kid})"
                )
            keys[kid] = key
            primary = primary or kid
        assert primary is not None
        return cls(keys, primary)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SnapshotKeys:
        return cls.parse(env.get(ENV_NAME, ""))


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _b64decode(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; None when it is not base64."""
    normal = text.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def new_key_spec(kid: str) -> str:
    """A fresh ``kid:base64key`` entry for MESH_SNAPSHOT_KEY."""
    if not _KID_RE.fullmatch(kid):
        raise ValueError(f"key id {kid!r} must be 1-64 of letters, digits, '_', '.', '-'")
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode('ascii')}"


class SnapshotCodec:
    """Encodes a storage-state dict to an encrypted blob bound to one session, and back."""

    def __init__(self, keys: SnapshotKeys, *, level: int = 6) -> None:
        self._keys = keys
        self._level = level

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SnapshotCodec:
        return cls(SnapshotKeys.from_env(env))

    @property
    def keys(self) -> SnapshotKeys:
        return self._keys

    def __repr__(self) -> str:
        return f"SnapshotCodec(keys={self._keys!r})"

    def encode(self, session_key: str, state: Mapping[str, Any]) -> bytes:
        """Encrypt `state` for the session named `session_key` (``tenant/session_id``)."""
        plain = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        packed = zlib.compress(plain, self._level)
        kid = self._keys.primary
        cipher = self._keys.cipher(kid)
        assert cipher is not None
        header = _header(kid)
        nonce = os.urandom(NONCE_BYTES)
        sealed = cipher.encrypt(nonce, packed, _aad(header, session_key))
        return header + nonce + sealed

    def decode(self, session_key: str, blob: bytes) -> dict[str, Any]:
        """Decrypt a blob made by `encode` for the same session; SnapshotError otherwise."""
        kid, header, nonce, sealed = _split(blob)
        cipher = self._keys.cipher(kid)
        if cipher is None:
            raise SnapshotError(
                f"snapshot of {session_key} is sealed with key id {kid!r}, which "
                f"{ENV_NAME} does not hold (it holds {', '.join(self._keys.kids)})"
            )
        try:
            packed = cipher.decrypt(nonce, sealed, _aad(header, session_key))
        except InvalidTag:
            raise SnapshotError(
                f"snapshot of {session_key} failed authentication: tampered, truncated "
                "or written for another session"
            ) from None
        try:
            inflater = zlib.decompressobj()
            plain = inflater.decompress(packed, MAX_PLAIN_BYTES)
            if inflater.unconsumed_tail:
                raise SnapshotError(f"snapshot of {session_key} inflates past {MAX_PLAIN_BYTES}")
            state = json.loads(plain.decode("utf-8"))
        except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SnapshotError(f"snapshot of {session_key} is not a valid state") from e
        if not isinstance(state, dict):
            raise SnapshotError(f"snapshot of {session_key} is not a JSON object")
        return state


def _header(kid: str) -> bytes:
    raw = kid.encode("ascii")
    return MAGIC + struct.pack("B", len(raw)) + raw


def _aad(header: bytes, session_key: str) -> bytes:
    raw = session_key.encode("utf-8")
    return header + struct.pack(">H", len(raw)) + raw


def _split(blob: bytes) -> tuple[str, bytes, bytes, bytes]:
    if not blob.startswith(MAGIC):
        raise SnapshotError("not a Session Mesh snapshot (bad magic)")
    at = len(MAGIC)
    if len(blob) < at + 1:
        raise SnapshotError("snapshot header is truncated")
    kid_len = blob[at]
    at += 1
    kid_raw = blob[at : at + kid_len]
    at += kid_len
    if len(kid_raw) != kid_len or len(blob) < at + NONCE_BYTES + 16:
        raise SnapshotError("snapshot header is truncated")
    try:
        kid = kid_raw.decode("ascii")
    except UnicodeDecodeError:
        raise SnapshotError("snapshot key id is not ascii") from None
    header = blob[: len(MAGIC) + 1 + kid_len]
    nonce = blob[at : at + NONCE_BYTES]
    return kid, header, nonce, blob[at + NONCE_BYTES :]


RECORD_MAGIC = b"SMR1"


class Sealer:
    """AES-256-GCM for one session's small records, with the snapshot keys.

    Blob: ``b"SMR1" | u8 len(kid) | kid | 12-byte nonce | ciphertext + tag``. The associated
    data binds the header, a purpose (``event``, ``dir``), the session (``tenant/session_id``)
    and `bound_to` (an event's seq), so a record cannot be moved to another session, another
    purpose or another seq; anything not sealed by a holder of the key fails to open."""

    def __init__(self, keys: SnapshotKeys) -> None:
        self._keys = keys

    def __repr__(self) -> str:
        return f"Sealer(keys={self._keys!r})"

    @staticmethod
    def _aad(header: bytes, purpose: str, session_key: str, bound_to: bytes) -> bytes:
        parts = [purpose.encode(), session_key.encode("utf-8"), bound_to]
        return header + b"".join(struct.pack(">H", len(p)) + p for p in parts)

    def seal(self, purpose: str, session_key: str, plain: bytes, bound_to: bytes = b"") -> bytes:
        kid = self._keys.primary
        cipher = self._keys.cipher(kid)
        assert cipher is not None
        raw = kid.encode("ascii")
        header = RECORD_MAGIC + struct.pack("B", len(raw)) + raw
        nonce = os.urandom(NONCE_BYTES)
        aad = self._aad(header, purpose, session_key, bound_to)
        return header + nonce + cipher.encrypt(nonce, plain, aad)

    def names(self, purpose: str, session_key: str, text: str) -> list[str]:
        """Keyed names (HMAC-SHA256, hex) of `text` for a Redis field, one per key, the primary
        key's first: a reader without the key can neither learn `text` nor find its field;
        lookups try each, so keys rotate."""
        out = []
        for kid in (self._keys.primary, *(k for k in self._keys.kids if k != self._keys.primary)):
            key = self._keys.name_key(kid)
            assert key is not None
            msg = b"\0".join((purpose.encode(), session_key.encode("utf-8"), text.encode()))
            out.append(f"{kid}:{hmac.new(key, msg, hashlib.sha256).hexdigest()}")
        return out

    def open(self, purpose: str, session_key: str, blob: bytes, bound_to: bytes = b"") -> bytes:
        """The plain bytes; SnapshotError when the blob is forged, moved or of an unknown key."""
        if not blob.startswith(RECORD_MAGIC):
            raise SnapshotError(f"{purpose} of {session_key} is not sealed")
        kid, header, nonce, sealed = _split(MAGIC + blob[len(RECORD_MAGIC) :])
        header = RECORD_MAGIC + header[len(MAGIC) :]
        cipher = self._keys.cipher(kid)
        if cipher is None:
            raise SnapshotError(f"{purpose} of {session_key} is sealed with unknown key {kid!r}")
        try:
            return cipher.decrypt(nonce, sealed, self._aad(header, purpose, session_key, bound_to))
        except InvalidTag:
            raise SnapshotError(
                f"{purpose} of {session_key} failed authentication: forged, altered or moved"
            ) from None


if __name__ == "__main__":
    import sys

    print(new_key_spec(sys.argv[1] if len(sys.argv) > 1 else "k1"))
