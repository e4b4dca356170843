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
    """Events numbered 1, 2, 3, ... per session; the newest `size` are kept for replay.

    A gated log (RemoteAuth) shows watchers only events up to `visible_seq`, which its writer
    advances with `release()` once the events are durable in Redis. `close()` ends every
    `follow()` after what is visible (the session lives elsewhere now)."""

    def __init__(
        self, session_id: str, *, last_seq: int = 0, size: int = 1000, gated: bool = False
    ) -> None:
        self.session_id = session_id
        self.last_seq = last_seq  # allocated
        self.visible_seq = last_seq  # shown to watchers
        self.gated = gated
        self.closed = False
        self._events: deque[pb.SessionEvent] = deque(maxlen=size)
        self._wake = asyncio.Event()
        # A gated log learns its previous events from Redis (`adopt`); until then nobody can
        # tell whether a seq is beyond its end.
        self._settled = asyncio.Event()
        if not gated:
            self._settled.set()

    def append(
        self,
        *,
        qr: pb.QrCode | None = None,
        state: pb.StateChange | None = None,
        loading: pb.Loading | None = None,
        message: pb.Message | None = None,
        ack: pb.MessageAck | None = None,
    ) -> pb.SessionEvent:
        self.last_seq += 1
        event = pb.SessionEvent(
            session_id=self.session_id,
            seq=self.last_seq,
            time=timestamp(),
            qr=qr,
            state=state,
            loading=loading,
            message=message,
            ack=ack,
        )
        self._events.append(event)
        if not self.gated:
            self.visible_seq = self.last_seq
            self._notify()
        return event

    def release(self, seq: int) -> None:
        """Let watchers see the events up to `seq` (gated logs)."""
        seq = min(seq, self.last_seq)
        if seq > self.visible_seq:
            self.visible_seq = seq
            self._notify()

    def adopt(self, events: list[pb.SessionEvent], *, last_seq: int = 0) -> None:
        """Continue from a previous owner's events (durable already): newer ones are added."""
        for event in sorted(events, key=lambda e: e.seq):
            if event.seq > self.last_seq:
                self._events.append(event)
                self.last_seq = event.seq
        self.last_seq = max(self.last_seq, last_seq)
        self.visible_seq = max(self.visible_seq, self.last_seq)
        self._settled.set()
        self._notify()

    def close(self) -> None:
        """End every follower once it has what is visible."""
        self.closed = True
        self._settled.set()
        self._notify()

    async def last_known(self, within: float) -> int | None:
        """The seq of the last visible event, once the log knows its history (waiting up to
        `within` s for a takeover to adopt it); None when it still does not."""
        if not self._settled.is_set():
            try:
                async with asyncio.timeout(within):
                    await self._settled.wait()
            except TimeoutError:
                return None
        return self.visible_seq

    def reopen(self) -> None:
        self.closed = False

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    @property
    def last_event(self) -> pb.SessionEvent | None:
        for event in reversed(self._events):
            if event.seq <= self.visible_seq:
                return event
        return None

    def since(self, after_seq: int) -> list[pb.SessionEvent]:
        return [e for e in self._events if after_seq < e.seq <= self.visible_seq]

    def pending(self, after_seq: int) -> list[pb.SessionEvent]:
        """Every event after `after_seq`, visible or not (what a writer must persist)."""
        return [e for e in self._events if e.seq > after_seq]

    async def follow(self, after_seq: int) -> AsyncIterator[pb.SessionEvent]:
        """Events after `after_seq`, missed ones first, then live ones; ends only when closed."""
        while True:
            wake = self._wake  # taken before reading, so no append slips between
            fresh = self.since(after_seq)
            for event in fresh:
                after_seq = event.seq
                yield event
            if self.closed:
                return
            if not fresh or after_seq >= self.visible_seq:
                await wake.wait()
