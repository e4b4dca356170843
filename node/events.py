"""A session's ordered event log: watchers get what they missed, then what happens next."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from sessionmesh.v1 import common_pb2 as pb


def timestamp(seconds: float | None = None) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int((time.time() if seconds is None else seconds) * 1e9))
    return ts


class EventLog:
    """Events numbered 1, 2, 3, ... per session; the newest `size` are kept for replay."""

    def __init__(self, session_id: str, *, last_seq: int = 0, size: int = 1000) -> None:
        self.session_id = session_id
        self.last_seq = last_seq
        self._events: deque[pb.SessionEvent] = deque(maxlen=size)
        self._wake = asyncio.Event()

    def append(
        self,
        *,
        qr: pb.QrCode | None = None,
        state: pb.StateChange | None = None,
        loading: pb.Loading | None = None,
    ) -> pb.SessionEvent:
        self.last_seq += 1
        event = pb.SessionEvent(
            session_id=self.session_id,
            seq=self.last_seq,
            time=timestamp(),
            qr=qr,
            state=state,
            loading=loading,
        )
        self._events.append(event)
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()
        return event

    @property
    def last_event(self) -> pb.SessionEvent | None:
        return self._events[-1] if self._events else None

    def since(self, after_seq: int) -> list[pb.SessionEvent]:
        return [e for e in self._events if e.seq > after_seq]

    async def follow(self, after_seq: int) -> AsyncIterator[pb.SessionEvent]:
        """Events after `after_seq`, missed ones first, then live ones; never ends by itself."""
        while True:
            wake = self._wake  # taken before reading, so no append slips between
            for event in self.since(after_seq):
                after_seq = event.seq
                yield event
            if after_seq >= self.last_seq:
                await wake.wait()
