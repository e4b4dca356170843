"""Where a session's login lives between runs. LocalAuth: files under SESSION_STORAGE_PATH.

A login is a Playwright storage-state snapshot, IndexedDB included. Files are written
atomically (temp file, fsync, rename) with mode 0600; with SESSION_BACKUP_ENABLED the previous
good copies are kept as `<id>.json.1`, `.2`, ... and a load falls back to them if the newest
copy is unreadable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

Snapshot = dict[str, Any]


class SnapshotStore(Protocol):
    """What the node needs from a login store, local or remote."""

    async def load(self, tenant: str, session_id: str) -> Snapshot | None: ...

    async def save(self, tenant: str, session_id: str, state: Snapshot) -> None: ...

    async def delete(self, tenant: str, session_id: str) -> None: ...


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never half.

    `durable` fsyncs before the rename, so a power cut keeps one whole copy too."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class LocalAuthStore:
    """Snapshots on this node's disk: `<root>/<tenant>/<session_id>.json`."""

    def __init__(self, root: Path, *, backups: int = 0) -> None:
        self.root = root
        self.backups = backups

    def path(self, tenant: str, session_id: str) -> Path:
        return self.root / tenant / f"{session_id}.json"

    async def load(self, tenant: str, session_id: str) -> Snapshot | None:
        return await asyncio.to_thread(self._load, self.path(tenant, session_id))

    async def save(self, tenant: str, session_id: str, state: Snapshot) -> None:
        # A real login is megabytes of JSON: encode it off the event loop.
        await asyncio.to_thread(self._save, self.path(tenant, session_id), state)

    async def delete(self, tenant: str, session_id: str) -> None:
        await asyncio.to_thread(self._delete, self.path(tenant, session_id))

    def _copies(self, path: Path) -> list[Path]:
        return [path] + [path.with_name(f"{path.name}.{i}") for i in range(1, self.backups + 1)]

    def _load(self, path: Path) -> Snapshot | None:
        for candidate in self._copies(path):
            try:
                state = json.loads(candidate.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                continue  # unreadable: fall back to the previous good copy
            if isinstance(state, dict) and "origins" in state:
                return state
        return None

    def _save(self, path: Path, state: Snapshot) -> None:
        data = json.dumps(state, separators=(",", ":")).encode()
        if self.backups and path.exists():
            copies = self._copies(path)
            for older, newer in zip(reversed(copies[1:]), reversed(copies[:-1]), strict=True):
                if newer.exists():
                    os.replace(newer, older)
        write_atomic(path, data)

    def _delete(self, path: Path) -> None:
        for candidate in self._copies(path):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
