"""The node's own record of its sessions (id, state, last seq), so a restart resumes them.

LocalAuth keeps it beside the snapshots: `<root>/<tenant>/<session_id>.meta.json`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path

from node.auth_store import write_atomic
from node.session import SessionInfo

log = logging.getLogger(__name__)


class LocalCatalog:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, tenant: str, session_id: str) -> Path:
        return self.root / tenant / f"{session_id}.meta.json"

    def put(self, info: SessionInfo) -> None:
        data = json.dumps(dataclasses.asdict(info), separators=(",", ":")).encode()
        write_atomic(self._path(info.tenant, info.session_id), data, durable=False)

    def get(self, tenant: str, session_id: str) -> SessionInfo | None:
        """The session's record, if it was ever hosted here."""
        try:
            raw = json.loads(self._path(tenant, session_id).read_bytes())
            fields = {f.name for f in dataclasses.fields(SessionInfo)}
            return SessionInfo(**{k: v for k, v in raw.items() if k in fields})
        except (OSError, ValueError, TypeError):
            return None

    async def load_all(self) -> list[SessionInfo]:
        return await asyncio.to_thread(self._load_all)

    def _load_all(self) -> list[SessionInfo]:
        found: list[SessionInfo] = []
        if not self.root.is_dir():
            return found
        fields = {f.name for f in dataclasses.fields(SessionInfo)}
        for path in sorted(self.root.glob("*/*.meta.json")):
            try:
                raw = json.loads(path.read_bytes())
                found.append(SessionInfo(**{k: v for k, v in raw.items() if k in fields}))
            except (OSError, ValueError, TypeError) as e:
                log.warning("skipping unreadable session record %s: %s", path, e)
        return found
