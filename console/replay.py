"""Replaying sessions' retained event logs into runs, for the Latency page."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from console import metrics
from console.client import MeshClient
from console.errors import ApiError
from sessionmesh.v1 import common_pb2 as pb

MAX_SESSIONS = 300  # most recently updated sessions replayed per refresh
WORKERS = 8


@dataclass(frozen=True)
class Loaded:
    runs: list[metrics.Run]
    sessions: int
    replayed: int
    failed: list[str]  # "session: CODE" for logs that could not be read
    at: float


def _replay(api: MeshClient, session: pb.Session) -> list[metrics.Run] | str:
    try:
        events = api.history(session)
    except ApiError as e:
        return f"{session.session_id}: {e.code}"
    return metrics.runs(session.session_id, session.auth_strategy, events)


def replay_all(api: MeshClient) -> Loaded:
    """The most recently updated sessions' logs, replayed a few at a time and split into runs."""
    sessions = sorted(api.sessions(), key=lambda s: metrics.seconds(s.updated_at), reverse=True)
    chosen = sessions[:MAX_SESSIONS]
    runs: list[metrics.Run] = []
    failed: list[str] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for result in pool.map(lambda s: _replay(api, s), chosen):
            if isinstance(result, str):
                failed.append(result)
            else:
                runs.extend(result)
    return Loaded(runs, len(sessions), len(chosen), failed, time.time())
