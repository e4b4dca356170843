"""Sealing secrets and queued bodies at rest: AES-256-GCM under a key id, bound to a record.

Blob layout: ``b"WHS1" | u8 len(kid) | kid | 12-byte nonce | ciphertext + tag``; the associated
data is the header plus the record's context (e.g. ``secret:<webhook id>``), so a blob cannot be
moved to another record. Without keys (a SQLite store under `make run`) values are kept as
``b"PLN1" | plain`` in the 0600 file, as LocalAuth keeps logins on the node's disk.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag

from node.crypto import SnapshotKeys
from webhooks.errors import SealError

SEALED = b"WHS1"
PLAIN = b"PLN1"
NONCE = 12


class Sealer:
    def __init__(self, keys: SnapshotKeys | None) -> None:
        self._keys = keys

    @property
    def sealing(self) -> bool:
        return self._keys is not None

    def __repr__(self) -> str:
        return f"Sealer(keys={self._keys!r})"

    def seal(self, plain: bytes, context: str) -> bytes:
        if self._keys is None:
            return PLAIN + plain
        kid = self._keys.primary
        cipher = self._keys.cipher(kid)
        assert cipher is not None
        header = SEALED + struct.pack("B", len(kid)) + kid.encode("ascii")
        nonce = os.urandom(NONCE)
        return header + nonce + cipher.encrypt(nonce, plain, header + context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        if blob.startswith(PLAIN):
            return blob[len(PLAIN) :]
        if not blob.startswith(SEALED) or len(blob) < len(SEALED) + 1:
            raise SealError(f"{context}: not a sealed value")
        size = blob[len(SEALED)]
        at = len(SEALED) + 1
        kid = blob[at : at + size].decode("ascii", "replace")
        header = blob[: at + size]
        nonce = blob[at + size : at + size + NONCE]
        if self._keys is None:
            raise SealError(
                f"{context} is sealed with key id {kid!r}; set MESH_WEBHOOK_KEY to read it"
            )
        cipher = self._keys.cipher(kid)
        if cipher is None:
            raise SealError(
                f"{context} is sealed with key id {kid!r}, which MESH_WEBHOOK_KEY does not hold"
            )
        try:
            return cipher.decrypt(nonce, blob[at + size + NONCE :], header + context.encode())
        except InvalidTag:
            raise SealError(f"{context} failed authentication (tampered or moved)") from None
