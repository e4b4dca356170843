"""A throwaway certificate authority for `make cluster`, compose, tests and benchmarks.

    python -m sessionmesh.certs [--days N] [--per-name [--ca-only NAME]] [--keep] \
        DIR NAME[=host,host] ...

writes `ca.pem` and, per name, `NAME.pem` and `NAME-key.pem` (mode 0600) into DIR; a NAME that
starts with `router` gets the router role, any other the node role. With `--per-name` each
name gets a folder of its own, `DIR/NAME/` holding `ca.pem`, `cert.pem` and `key.pem` (one
volume per process: no process holds another's key), and `--ca-only NAME` a folder with the
CA alone, for a client that only verifies. `--keep` leaves DIR as it is when every
file is already there. The CA's key is never written: nothing can be signed later. Production
should use its own PKI; these certificates live a week unless `--days` says otherwise.

Roles: each certificate names its process's role in a URI SAN (`spiffe://session-mesh/router`,
`.../node`), the way SPIFFE names workloads; a node answers only callers whose certificate
carries the router's (sessionmesh/tls.py, MESH_MTLS_ROUTER_ID), so a node's certificate cannot
call another node.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = dt.timedelta(days=7)
ROLE_PREFIX = "spiffe://session-mesh/"
ROUTER_ID = f"{ROLE_PREFIX}router"  # the identity nodes require of their callers by default


def role_id(role: str) -> str:
    """The URI SAN of a role: `router`, `node`, or another process's (`launcher`)."""
    return f"{ROLE_PREFIX}{role}"


@dataclass(frozen=True)
class Issued:
    """Paths of one issued certificate and its key (PEM)."""

    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Session Mesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


class Authority:
    """A CA in `root`: `issue(name, hosts)` signs a certificate valid as server and client."""

    def __init__(self, root: Path, valid_for: dt.timedelta = VALID_FOR) -> None:
        self.root = root
        self.valid_for = valid_for
        root.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Session Mesh throwaway CA"))
            .issuer_name(_name("Session Mesh throwaway CA"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + self.valid_for)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca = root / "ca.pem"
        _write(self.ca, self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, hosts: list[str] | None = None, *, role: str = "node") -> Issued:
        """A certificate for `name` naming `hosts` (IPs or DNS names; default loopback) and
        its `role` (a URI SAN: only `router` may call nodes)."""
        hosts = hosts or ["127.0.0.1", "::1", "localhost"]
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(role_id(role))]
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + self.valid_for)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        issued = Issued(self.root / f"{name}.pem", self.root / f"{name}-key.pem")
        _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write(issued.key, _pem_key(key), 0o600)
        return issued

    def mtls_env(self, issued: Issued) -> dict[str, str]:
        """MESH_MTLS_* for a process holding `issued`."""
        return {
            "MESH_MTLS_CERT": str(issued.cert),
            "MESH_MTLS_KEY": str(issued.key),
            "MESH_MTLS_CA": str(self.ca),
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sessionmesh.certs", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--days", type=int, default=VALID_FOR.days, help="validity (default 7)")
    parser.add_argument("--per-name", action="store_true", help="DIR/NAME/{ca,cert,key}.pem")
    parser.add_argument("--keep", action="store_true", help="do nothing if every file exists")
    parser.add_argument(
        "--ca-only",
        action="append",
        default=[],
        metavar="NAME",
        help="with --per-name: DIR/NAME/ca.pem alone, for a client that only verifies",
    )
    parser.add_argument("dir", type=Path)
    parser.add_argument("names", nargs="+", metavar="NAME[=host,host]")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.days < 1:
        print("--days must be at least 1", file=sys.stderr)
        return 2
    specs = [(name, hosts) for name, _, hosts in (s.partition("=") for s in args.names)]
    root: Path = args.dir
    if args.ca_only and not args.per_name:
        print("--ca-only needs --per-name", file=sys.stderr)
        return 2
    if args.per_name:
        wanted = [root / name / f for name, _ in specs for f in ("ca.pem", "cert.pem", "key.pem")]
        wanted += [root / name / "ca.pem" for name in args.ca_only]
    else:
        wanted = [root / "ca.pem"]
        wanted += [root / f for name, _ in specs for f in (f"{name}.pem", f"{name}-key.pem")]
    if args.keep and all(p.exists() for p in wanted):
        print(f"{root}: every certificate is there, kept")
        return 0
    ca = Authority(root, dt.timedelta(days=args.days))
    for name, hosts in specs:
        role = "router" if name.startswith("router") else "node"
        issued = ca.issue(name, [h for h in hosts.split(",") if h] or None, role=role)
        if args.per_name:
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            # Written, not moved: each folder may be a volume of its own (another filesystem).
            _write(folder / "ca.pem", ca.ca.read_bytes())
            _write(folder / "cert.pem", issued.cert.read_bytes())
            _write(folder / "key.pem", issued.key.read_bytes(), 0o600)
            issued.cert.unlink()
            issued.key.unlink()
            print(folder)
        else:
            print(f"{issued.cert} {issued.key}")
    for name in args.ca_only:
        (root / name).mkdir(parents=True, exist_ok=True)
        _write(root / name / "ca.pem", ca.ca.read_bytes())
        print(root / name)
    if args.per_name:
        ca.ca.unlink()
    else:
        print(ca.ca)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
