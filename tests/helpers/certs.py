"""Test certificates for SIP over TLS, made with the ``openssl`` command line (no Python deps).

:func:`make_test_pki` writes into a folder: a test CA, and signed by it a server certificate for
127.0.0.1 / localhost, an expired one (same names), one for another name (``other.example``),
a client certificate (mutual TLS); and a self-signed certificate no CA vouches for. Each
certificate comes with its key (``<name>.key``). Keys are EC P-256: fast to make and to use.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertSet", "issue_server_certificate", "make_test_pki"]

_CA_CONF = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
"""


@dataclass(frozen=True)
class CertSet:
    """Paths of the files :func:`make_test_pki` made."""

    folder: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)

    @property
    def ca(self) -> str:
        return self.path("ca.crt")

    def cert(self, name: str) -> str:
        return self.path(f"{name}.crt")

    def key(self, name: str) -> str:
        return self.path(f"{name}.key")

    def serial(self, name: str) -> int:
        """The serial number of certificate ``name`` (the CA numbers them from 0x1000)."""
        out = subprocess.run(["openssl", "x509", "-in", self.cert(name), "-noout", "-serial"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip().split("=", 1)[1], 16)


def _run(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


def _key(folder: Path, name: str) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=folder)


def _signed(folder: Path, name: str, cn: str, san: str | None, *, start: str | None = None,
            end: str | None = None, client: bool = False) -> None:
    _key(folder, name)
    req = ["req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}"]
    if san:
        req += ["-addext", f"subjectAltName={san}"]
    usage = "clientAuth" if client else "serverAuth,clientAuth"
    req += ["-addext", f"extendedKeyUsage={usage}", "-addext", "basicConstraints=critical,CA:FALSE"]
    _run(*req, cwd=folder)
    sign = ["ca", "-batch", "-config", "ca.conf", "-cert", "ca.crt", "-keyfile", "ca.key",
            "-in", f"{name}.csr", "-out", f"{name}.crt", "-notext"]
    if start and end:
        sign += ["-startdate", start, "-enddate", end]
    else:
        sign += ["-days", "30"]
    _run(*sign, cwd=folder)


def make_test_pki(folder: Path) -> CertSet:
    """Write the CA and certificates described in the module docstring into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "newcerts").mkdir(exist_ok=True)
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("1000\n")
    (folder / "ca.conf").write_text(_CA_CONF.format(dir=folder))
    _key(folder, "ca")
    _run("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", "30",
         "-subj", "/CN=SimpleSIP test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    local = "IP:127.0.0.1,IP:::1,DNS:localhost"
    _signed(folder, "server", "localhost", local)
    _signed(folder, "expired", "localhost", local, start="20200101000000Z", end="20200201000000Z")
    _signed(folder, "other", "other.example", "DNS:other.example")
    _signed(folder, "client", "trunk.example", "DNS:trunk.example", client=True)
    _key(folder, "selfsigned")
    _run("req", "-x509", "-new", "-key", "selfsigned.key", "-out", "selfsigned.crt", "-days", "30",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName={local}", cwd=folder)
    return CertSet(folder)


def issue_server_certificate(pki: CertSet, name: str) -> None:
    """Another server certificate from the test CA for 127.0.0.1, ::1 and localhost (a renewal):
    ``<name>.crt`` and ``<name>.key``, with the CA's next serial number."""
    _signed(pki.folder, name, "localhost", "IP:127.0.0.1,IP:::1,DNS:localhost")
