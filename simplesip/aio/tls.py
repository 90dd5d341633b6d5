"""TLS for SIP (RFC 3261 26.2, RFC 5630): the two ``ssl.SSLContext`` a transport needs, built
with Python's ``ssl`` module (no cryptography of our own).

- The **server** context holds our certificate chain and key; with ``client_ca_file`` it asks
  every client for a certificate and checks it (mutual TLS, how some carriers authenticate a trunk).
- The **client** context verifies the server's certificate by default, against the system's CA
  store or ``ca_file``, and its host name (the ``server_hostname`` the transport passes: the
  target's host name, or for an IP literal the IP, checked against the certificate's
  subjectAltName). ``cert_file``/``key_file`` present our certificate when the server asks.

:func:`describe_tls_error` turns the exceptions of a failed handshake into one line that names the
problem ("certificate has expired", "host name mismatch..."), for logs and ``CallError`` messages.
"""

from __future__ import annotations

import hashlib
import ssl

__all__ = ["certificate_fingerprint", "client_context", "describe_tls_error", "server_context"]

#: TLS 1.2 is the oldest version RFC 8996 (and carriers' trunk specifications) still allow.
_MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(cert_file: str, key_file: str | None = None, *,
                   client_ca_file: str | None = None) -> ssl.SSLContext:
    """The context of a TLS listener: our certificate (chain) in ``cert_file`` and its key in
    ``key_file`` (or in ``cert_file`` too). ``client_ca_file``: require a client certificate
    signed by one of these CAs (mutual TLS). Raises OSError/ssl.SSLError on unreadable files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MINIMUM_VERSION
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca_file)
    return context


def client_context(*, ca_file: str | None = None, verify: bool = True, cert_file: str | None = None,
                   key_file: str | None = None) -> ssl.SSLContext:
    """The context of our outbound TLS connections. ``verify`` (the default): the server's
    certificate must chain to ``ca_file``'s CAs (None: the system store) and name the host we
    connect to. ``verify=False`` accepts any certificate: for a lab only, never for a carrier.
    ``cert_file``/``key_file``: our client certificate, for mutual TLS."""
    context = ssl.create_default_context(cafile=ca_file) if verify else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _MINIMUM_VERSION
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def describe_tls_error(exc: BaseException) -> str:
    """One line naming what went wrong in a TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        if detail.startswith("Hostname mismatch") or detail.startswith("IP address mismatch"):
            return f"TLS: host name mismatch ({detail})"
        return f"TLS: certificate verification failed ({detail})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: handshake failed ({exc.reason or exc})"
    if isinstance(exc, (TimeoutError, ConnectionAbortedError)):
        return f"TLS: handshake did not finish ({exc or 'timed out'})"
    if isinstance(exc, ConnectionError):
        return f"TLS: {exc}" if exc.args else "TLS: the peer closed the connection during the handshake"
    return f"TLS: {exc}"


def certificate_fingerprint(cert_file: str) -> str:
    """The SHA-256 fingerprint (``AB:CD:...``, as ``openssl x509 -fingerprint -sha256`` prints
    it) of the first certificate in a PEM file: which certificate a log line or a peer means."""
    with open(cert_file, encoding="ascii", errors="replace") as f:
        text = f.read()
    end = "-----END CERTIFICATE-----"
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0 or end not in text[start:]:
        raise ValueError(f"{cert_file}: no PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(text[start:text.index(end, start) + len(end)])
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
