"""Transport security settings: TLS on the public API, mutual TLS between routers and nodes.

    MESH_TLS_CERT, MESH_TLS_KEY      the router serves its public API over TLS with these (PEM)
    MESH_TLS_CA                      clients (meshctl, console) verify the router with this CA
    MESH_MTLS_CERT, MESH_MTLS_KEY    this process's own certificate for router <-> node calls
    MESH_MTLS_CA                     the CA every router and node certificate is signed by
    MESH_MTLS_ROUTER_ID              nodes: the identity a caller's certificate must carry (a URI
                                     or DNS SAN, or the CN); default spiffe://session-mesh/router
    MESH_MTLS_NODE_NAME              routers: the name a node's certificate must carry, when
                                     nodes are dialled by an address no certificate names (a
                                     pod IP); default: the address dialled
    MESH_ALLOW_INSECURE              true: the router's public API may go without TLS off
                                     loopback. Never between routers and nodes: a node off
                                     loopback refuses to start without mTLS, and a router
                                     refuses to call one without it
    MESH_NODE_SECRET                 loopback development only: a shared secret routers send
                                     and nodes check (in constant time) instead of mTLS
    MESH_HEALTH_LISTEN               host:port of a plaintext port serving grpc.health.v1 and
                                     nothing else, for probes that speak no TLS (Kubernetes')

A bad or missing file fails at start-up naming its variable; key material never appears in a
`repr` or a log line.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from sessionmesh.certs import ROUTER_ID
from sessionmesh.config import ConfigError, env_bool, is_loopback, split_address

SECRET_HEADER = "x-mesh-node-secret"
MIN_SECRET_LENGTH = 16


def _read(env: Mapping[str, str], var: str) -> bytes | None:
    path = env.get(var, "").strip()
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{var}: cannot read {path!r}: {e.strerror or e}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{var}: {path!r} is not a PEM file")
    return data


@dataclass(frozen=True, repr=False)
class KeyPair:
    """A certificate chain and its private key (PEM), with the CA that peers must chain to."""

    cert: bytes
    key: bytes = field(compare=False)
    ca: bytes | None = None

    def __repr__(self) -> str:
        return "KeyPair(cert=..., key=***)"


def _pair(env: Mapping[str, str], prefix: str, *, ca_var: str | None) -> KeyPair | None:
    cert, key = _read(env, f"{prefix}_CERT"), _read(env, f"{prefix}_KEY")
    if (cert is None) != (key is None):
        given, missing = (f"{prefix}_CERT", f"{prefix}_KEY")[:: 1 if cert else -1]
        raise ConfigError(f"{given} is set but {missing} is not: give both")
    if cert is None or key is None:
        return None
    return KeyPair(cert, key, _read(env, ca_var) if ca_var else None)


@dataclass(frozen=True, repr=False)
class TransportSecurity:
    """Everything a process needs to secure its gRPC: see the module docstring."""

    public: KeyPair | None = None  # MESH_TLS_CERT/KEY: the router's public API
    public_ca: bytes | None = None  # MESH_TLS_CA: what clients trust
    mutual: KeyPair | None = None  # MESH_MTLS_CERT/KEY/CA
    allow_insecure: bool = False  # MESH_ALLOW_INSECURE
    node_secret: str = field(default="", compare=False)  # MESH_NODE_SECRET
    router_id: str = ROUTER_ID  # MESH_MTLS_ROUTER_ID: what a node requires of its callers
    node_name: str = ""  # MESH_MTLS_NODE_NAME: what a router requires of a node's certificate
    health_listen: str = ""  # MESH_HEALTH_LISTEN: plaintext grpc.health.v1 only; "": none

    def __repr__(self) -> str:
        return (
            f"TransportSecurity(public_tls={self.public is not None}, "
            f"mtls={self.mutual is not None}, allow_insecure={self.allow_insecure}, "
            f"node_secret={'***' if self.node_secret else 'unset'})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TransportSecurity:
        mutual = _pair(env, "MESH_MTLS", ca_var="MESH_MTLS_CA")
        if mutual is not None and mutual.ca is None:
            raise ConfigError("MESH_MTLS_CA is required with MESH_MTLS_CERT: the mesh's CA")
        if mutual is None and env.get("MESH_MTLS_CA", "").strip():
            raise ConfigError("MESH_MTLS_CA is set but MESH_MTLS_CERT and MESH_MTLS_KEY are not")
        node_name = env.get("MESH_MTLS_NODE_NAME", "").strip()
        if node_name and mutual is None:
            raise ConfigError("MESH_MTLS_NODE_NAME is set but MESH_MTLS_CERT is not")
        health_listen = env.get("MESH_HEALTH_LISTEN", "").strip()
        if health_listen:
            split_address(health_listen, "MESH_HEALTH_LISTEN", allow_port_zero=True)
        secret = env.get("MESH_NODE_SECRET", "").strip()
        if secret and len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"MESH_NODE_SECRET must be at least {MIN_SECRET_LENGTH} characters, "
                f"got {len(secret)}"
            )
        return cls(
            public=_pair(env, "MESH_TLS", ca_var=None),
            public_ca=_read(env, "MESH_TLS_CA"),
            mutual=mutual,
            allow_insecure=env_bool(env, "MESH_ALLOW_INSECURE", False),
            node_secret=secret,
            router_id=env.get("MESH_MTLS_ROUTER_ID", "").strip() or ROUTER_ID,
            node_name=node_name,
            health_listen=health_listen,
        )

    # -- checks at start-up ----------------------------------------------------------------

    def check_node_listen(self, listen: str, var: str = "MESH_NODE_LISTEN") -> None:
        """A node off loopback needs mTLS, with no way around it: MESH_ALLOW_INSECURE is for
        the router's public API only, and the shared secret is for loopback development."""
        host, _ = split_address(listen, var, allow_port_zero=True)
        if is_loopback(host) or self.mutual is not None:
            return
        if self.node_secret:
            raise ConfigError(
                f"{var} {listen} is not a loopback address: MESH_NODE_SECRET is for loopback "
                "development only; set MESH_MTLS_CERT, MESH_MTLS_KEY and MESH_MTLS_CA"
            )
        raise ConfigError(
            f"{var} {listen} is not a loopback address and the node has no mutual TLS: "
            "set MESH_MTLS_CERT, MESH_MTLS_KEY and MESH_MTLS_CA (MESH_ALLOW_INSECURE does not "
            "apply to nodes)"
        )

    def check_public_listen(self, listen: str, var: str = "MESH_ROUTER_LISTEN") -> None:
        host, _ = split_address(listen, var, allow_port_zero=True)
        if is_loopback(host) or self.public is not None or self.allow_insecure:
            return
        raise ConfigError(
            f"{var} {listen} is not a loopback address and the router has no TLS: set "
            "MESH_TLS_CERT and MESH_TLS_KEY (or MESH_ALLOW_INSECURE=true)"
        )

    def check_node_address(self, address: str, var: str = "MESH_NODES") -> None:
        """A router calls a node off loopback only over mTLS (MESH_ALLOW_INSECURE does not
        change that: it is for the public API)."""
        host, _ = split_address(address, var)
        if is_loopback(host) or self.mutual is not None:
            return
        raise ConfigError(
            f"{var} names {address}, which is not a loopback address, and the router has no "
            "mutual TLS: set MESH_MTLS_CERT, MESH_MTLS_KEY and MESH_MTLS_CA"
        )

    # -- credentials -----------------------------------------------------------------------

    def node_server_credentials(self) -> grpc.ServerCredentials | None:
        """A node's server credentials: mutual TLS, client certificates required."""
        if self.mutual is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.mutual.key, self.mutual.cert)],
            root_certificates=self.mutual.ca,
            require_client_auth=True,
        )

    def node_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """A router's credentials toward nodes: its own certificate, trusting the mesh CA."""
        if self.mutual is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.mutual.ca,
            private_key=self.mutual.key,
            certificate_chain=self.mutual.cert,
        )

    def node_channel_options(self) -> list[tuple[str, str]]:
        """Channel options toward nodes: the name their certificate is checked against."""
        if self.mutual is None or not self.node_name:
            return []
        return [("grpc.ssl_target_name_override", self.node_name)]

    def public_server_credentials(self) -> grpc.ServerCredentials | None:
        if self.public is None:
            return None
        return grpc.ssl_server_credentials([(self.public.key, self.public.cert)])

    def public_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """What clients use toward the router: TLS when MESH_TLS_CA is set."""
        if self.public_ca is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.public_ca)

    def caller_is_router(self, auth_context: Mapping[str, Sequence[bytes]]) -> bool:
        """With mTLS, True when the caller's certificate (already verified against the mesh CA)
        names `router_id` in a URI or DNS SAN or as its CN: any mesh certificate would pass
        the transport, a node's included. Without mTLS there is nothing to check here."""
        if self.mutual is None:
            return True
        wanted = self.router_id.encode()
        names = (
            *auth_context.get("peer_uri", ()),
            *auth_context.get("x509_subject_alternative_name", ()),
            *auth_context.get("x509_common_name", ()),
        )
        return wanted in names

    def node_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata a router sends with every node call (the loopback secret, if any)."""
        return ((SECRET_HEADER, self.node_secret),) if self.node_secret else ()

    def secret_matches(self, sent: str | bytes | None) -> bool:
        """Constant-time check of a node secret a caller sent."""
        if not self.node_secret:
            return True
        if sent is None:
            return False
        raw = sent if isinstance(sent, bytes) else sent.encode()
        return hmac.compare_digest(raw, self.node_secret.encode())


def client_channel_security(
    address: str,
    *,
    ca: bytes | None,
    use_system_roots: bool = False,
    allow_insecure: bool = False,
    var: str = "MESH_ROUTER",
) -> grpc.ChannelCredentials | None:
    """How a client (meshctl, console) reaches a router: TLS with `ca` (or the system's roots),
    else plaintext, which is refused off loopback unless `allow_insecure` (tokens and QR
    payloads would cross the network in clear)."""
    if ca is not None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    if use_system_roots:
        return grpc.ssl_channel_credentials()
    host, _ = split_address(address, var)
    if is_loopback(host) or allow_insecure:
        return None
    raise ConfigError(
        f"{var} {address} is not a loopback address: set MESH_TLS_CA to the router's CA "
        "(or MESH_ALLOW_INSECURE=true to send the token in clear)"
    )
