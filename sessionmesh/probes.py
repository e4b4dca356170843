"""A plaintext port that serves grpc.health.v1 and nothing else, for probes that speak no TLS.

Kubernetes' native gRPC probe cannot do TLS, let alone present a client certificate; a node's
API port is mutual TLS only. MESH_HEALTH_LISTEN gives such probes a port of their own: the same
health servicer as the API port (so both report the same status), no other service, no
reflection, no interceptors to pass. Every other method answers UNIMPLEMENTED.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from sessionmesh.config import join_address, split_address

# A handful of probes at a time: nothing else is served here.
MAX_CONCURRENT_PROBES = 16


async def start_health_server(
    servicer: health.aio.HealthServicer, listen: str, var: str = "MESH_HEALTH_LISTEN"
) -> tuple[grpc.aio.Server, str]:
    """Start a server with `servicer` alone on `listen`; answers it and the bound address."""
    host, _ = split_address(listen, var, allow_port_zero=True)
    server = grpc.aio.server(maximum_concurrent_rpcs=MAX_CONCURRENT_PROBES)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen} ({var})")
    await server.start()
    return server, join_address(host, port)
