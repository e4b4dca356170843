"""The throwaway CA's command line, as compose and make-secrets.sh run it."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

from cryptography import x509

from sessionmesh import certs


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = certs.main(list(argv))
    return code, out.getvalue()


def test_per_name_folders_share_one_ca_and_keep_holds_them(tmp_path: Path) -> None:
    argv = ("--per-name", "--keep", "--days", "30", "--ca-only", "console", str(tmp_path))
    code, _ = run(*argv, "router=router-1,127.0.0.1", "node-1=node-1")
    assert code == 0
    assert {p.name for p in tmp_path.iterdir()} == {"router", "node-1", "console"}
    assert {p.name for p in (tmp_path / "console").iterdir()} == {"ca.pem"}
    ca = x509.load_pem_x509_certificate((tmp_path / "console" / "ca.pem").read_bytes())
    for name, role in (("router", "router"), ("node-1", "node")):
        folder = tmp_path / name
        assert (folder / "key.pem").stat().st_mode & 0o077 == 0
        assert (folder / "ca.pem").read_bytes() == (tmp_path / "console" / "ca.pem").read_bytes()
        cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [certs.role_id(role)]
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 30 <= life.days <= 31
    assert not (tmp_path / "ca.pem").exists(), "only the per-name copies are left"
    before = (tmp_path / "node-1" / "cert.pem").read_bytes()
    code, out = run(*argv, "router", "node-1")
    assert code == 0 and "kept" in out
    assert (tmp_path / "node-1" / "cert.pem").read_bytes() == before
    (tmp_path / "console" / "ca.pem").unlink()  # one file missing: all made again, one CA
    code, _ = run(*argv, "router", "node-1")
    assert code == 0 and (tmp_path / "node-1" / "cert.pem").read_bytes() != before
    assert run("--ca-only", "console", str(tmp_path), "router")[0] == 2
