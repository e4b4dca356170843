#!/usr/bin/env python3
"""`mesh-healthcheck HOST:PORT`: exit 0 when grpc.health.v1 answers SERVING, else 1.

For container health checks where the orchestrator has no gRPC probe of its own (compose), or
where the port needs TLS (Kubernetes' native gRPC probe speaks plaintext only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesh-healthcheck", description=__doc__)
    parser.add_argument("address", help="host:port of a mesh-node or mesh-router")
    parser.add_argument("--service", default="", help="health service name (default: the server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA to verify the server with (TLS)")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM client key (mutual TLS)")
    parser.add_argument("--server-name", help="name to verify the server's certificate against")
    args = parser.parse_args(argv)
    if args.tls_ca is None:
        channel = grpc.insecure_channel(args.address)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=args.tls_ca.read_bytes(),
            private_key=args.tls_key.read_bytes() if args.tls_key else None,
            certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
        )
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        channel = grpc.secure_channel(args.address, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as e:
            print(f"{args.address}: {e.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
