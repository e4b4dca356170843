"""The console's client with the webhook calls: endpoints, deliveries, dead letters, replay."""

from __future__ import annotations

from dataclasses import dataclass

from console.client import MeshClient
from console.metrics import seconds
from sessionmesh.v1 import mesh_pb2

MAX_DEAD_PAGES = 10  # dead letters shown at most: 10 pages of 1000


@dataclass(frozen=True)
class Lag:
    """Event to 2xx answer over recent delivered deliveries (seconds)."""

    count: int
    p50: float
    p95: float
    worst: float


def lag(deliveries: list[mesh_pb2.Delivery]) -> Lag | None:
    values = sorted(
        seconds(d.finished_at) - seconds(d.created_at)
        for d in deliveries
        if d.outcome == mesh_pb2.DELIVERED and d.finished_at.seconds and d.created_at.seconds
    )
    if not values:
        return None

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return Lag(len(values), at(0.50), at(0.95), values[-1])


class WebhookClient(MeshClient):
    def webhooks(self) -> list[mesh_pb2.Webhook]:
        reply = self._call("ListWebhooks", mesh_pb2.ListWebhooksRequest())
        return list(reply.webhooks)

    def deliveries(self, webhook_id: str = "", limit: int = 500) -> list[mesh_pb2.Delivery]:
        request = mesh_pb2.ListDeliveriesRequest(webhook_id=webhook_id, page_size=limit)
        return list(self._call("ListDeliveries", request).deliveries)

    def dead_letters(self, webhook_id: str = "") -> list[mesh_pb2.Delivery]:
        found: list[mesh_pb2.Delivery] = []
        token = ""
        for _ in range(MAX_DEAD_PAGES):
            page = self._call(
                "ListDeadLetters",
                mesh_pb2.ListDeadLettersRequest(
                    webhook_id=webhook_id, page_size=1000, page_token=token
                ),
            )
            found.extend(page.dead_letters)
            token = page.next_page_token
            if not token:
                break
        return found

    def replay(self, ids: list[str] | None = None, webhook_id: str = "") -> int:
        if ids:
            request = mesh_pb2.ReplayDeadLettersRequest(ids=ids)
        else:
            request = mesh_pb2.ReplayDeadLettersRequest(all=True, webhook_id=webhook_id)
        return int(self._call("ReplayDeadLetters", request).replayed)
