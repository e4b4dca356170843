"""GetLatency against a real mesh: the nodes' histograms, summed by the router, per tenant."""

from __future__ import annotations

from typing import Any

import pytest

from sessionmesh import latency
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.conftest import TOKENS
from tests.console.conftest import ConsoleMesh
from tests.helpers import wait_for

pytestmark = pytest.mark.browser  # the mesh's node runs a real Chromium


async def test_a_tenant_sees_its_own_histograms_and_no_one_elses(
    console_mesh: ConsoleMesh, clients: Any
) -> None:
    mine = clients(console_mesh.router)
    acme = mesh_pb2.Latency()

    async def recorded() -> bool:
        # the node records a time once its observer has seen the event: wait, do not assume
        nonlocal acme
        acme = await mine.GetLatency(mesh_pb2.GetLatencyRequest())
        return sum(h.count for h in acme.histograms) >= 3

    await wait_for(recorded, what="two first QRs and one READY recorded")
    assert acme.nodes == 1 and not acme.unreachable
    got = {(h.phase, h.auth_strategy): h for h in acme.histograms}
    assert set(got) == {(latency.FIRST_QR, pb.LOCAL), (latency.READY, pb.LOCAL)}
    first = got[(latency.FIRST_QR, pb.LOCAL)]
    assert first.count == 2 and sum(first.counts) == 2  # alpha and beta showed a QR
    assert list(first.bounds) == list(latency.BOUNDS)
    assert got[(latency.READY, pb.LOCAL)].count == 1  # alpha was scanned to READY
    assert 0 < first.sum < got[(latency.READY, pb.LOCAL)].sum + first.sum

    globex = clients(console_mesh.router, token=TOKENS["globex"])
    other = await globex.GetLatency(mesh_pb2.GetLatencyRequest())
    assert other.nodes == 1 and list(other.histograms) == []
