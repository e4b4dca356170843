"""A session's sends: one queue in order at a rate, and a durable log that makes a key send once.

The log records each idempotency key with the message id chosen for it BEFORE the page sends,
then the ack reached. A retry with the same key (after a timeout, a node restart or a failover)
finds the record: a sent message is answered as it was; a send whose outcome is unknown goes
again under the same message id, which WhatsApp takes as the same message, not a second one.
LocalAuth keeps the log in a file beside the login; RemoteAuth in Redis beside the snapshot
(sealed: `node/remote.py`'s SealedSendLog), so the next owner of the session sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from node.auth_store import write_atomic

KEEP_SECONDS = 7 * 24 * 3600  # how long a key is remembered
KEEP_LOCAL = 10_000  # records per session in the LocalAuth file, newest kept


@dataclass
class SendRecord:
    key: str
    digest: str  # of the message, so a key reused for another message is refused
    message_id: str
    state: str  # pending (the page may or may not have sent it) | sent
    ack: int = 0
    at: float = 0.0
    key_id: str = ""  # the id inside the message key, chosen before the page sent it

    @classmethod
    def decode(cls, raw: str | bytes) -> SendRecord:
        return cls(**json.loads(raw))

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class SendLog(Protocol):
    async def get(self, key: str) -> SendRecord | None: ...

    async def put(self, record: SendRecord) -> None: ...


class FileSendLog:
    """LocalAuth: `<root>/<tenant>/<session_id>.sends.json`, written atomically."""

    def __init__(self, root: Path, tenant: str, session_id: str) -> None:
        self.path = root / tenant / f"{session_id}.sends.json"
        self._lock = asyncio.Lock()

    async def get(self, key: str) -> SendRecord | None:
        records = await asyncio.to_thread(self._read)
        raw = records.get(key)
        return SendRecord(**raw) if raw else None

    async def put(self, record: SendRecord) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write, record)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, record: SendRecord) -> None:
        records = self._read()
        records.pop(record.key, None)
        records[record.key] = asdict(record)
        cutoff = time.time() - KEEP_SECONDS
        kept = [(k, v) for k, v in records.items() if v.get("at", 0) >= cutoff][-KEEP_LOCAL:]
        write_atomic(self.path, json.dumps(dict(kept), separators=(",", ":")).encode())


class Closed(Exception):
    """The queue was closed (the session stopped or moved) before the job ran."""


class SendQueue:
    """Runs a session's send jobs one at a time, in the order they came, no faster than
    `rate` per second (with bursts of `burst`): WhatsApp bans accounts that send in bursts."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._tokens = float(self._burst)
        self._refilled = time.monotonic()
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._closed = asyncio.Event()

    @property
    def waiting(self) -> int:
        return self._waiting

    async def run(self, job: Callable[[], Awaitable[Any]]) -> Any:
        """Wait for this job's turn and a token, then run it; Closed if the queue closes."""
        self._waiting += 1
        try:
            async with self._lock:  # asyncio.Lock is fair: first come, first served
                await self._take_token()
                return await job()
        finally:
            self._waiting -= 1

    async def _take_token(self) -> None:
        while True:
            if self._closed.is_set():
                raise Closed("the session's send queue is closed")
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), (1 - self._tokens) / self._rate)

    def close(self) -> None:
        """Refuse every job not yet running (the session stopped or moved)."""
        self._closed.set()
