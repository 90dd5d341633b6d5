"""``listen.tls:`` of ivr.yaml reaches simplesip's EndpointConfig, files relative to the
configuration file; mistakes point at their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.config import ConfigError, load_config, parse_config
from ivr.sip_adapter import make_endpoint
from tests.helpers.certs import CertSet, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def test_tls_settings_reach_the_endpoint(pki: CertSet, tmp_path: Path):
    (tmp_path / "ivr.yaml").write_text(
        f"listen:\n  transports: [udp, tcp, tls]\n  tls:\n    port: 5062\n    cert: {pki.cert('server')}\n"
        f"    key: {pki.key('server')}\n    ca: {pki.ca}\n    verify: false\n    client_ca: {pki.ca}\n"
        f"    handshake_timeout: 3\n"
        f"accounts:\n  - {{username: a, password: b, server: pbx.example, transport: tls}}\n")
    cfg = make_endpoint(load_config(tmp_path / "ivr.yaml")).config
    assert cfg.transports == ("udp", "tcp", "tls") and cfg.tls_port == 5062
    assert (cfg.tls_cert_file, cfg.tls_key_file) == (pki.cert("server"), pki.key("server"))
    assert (cfg.tls_ca_file, cfg.tls_client_ca_file, cfg.tls_verify) == (pki.ca, pki.ca, False)
    assert cfg.tls_handshake_timeout == 3.0
    assert (cfg.transport, cfg.server_port) == ("tls", 5061)  # the TLS port by default


def test_files_are_relative_to_the_configuration(pki: CertSet):
    folder = Path(pki.ca).parent
    (folder / "ivr.yaml").write_text("listen:\n  transports: [tls]\n  tls: {cert: server.crt, key: server.key}\n")
    cfg = make_endpoint(load_config(folder / "ivr.yaml")).config
    assert cfg.tls_cert_file == str(folder / "server.crt") and cfg.tls_verify is True
    assert cfg.tls_ca_file is None  # the system's CAs


def test_without_tls_in_transports_nothing_is_set():
    cfg = make_endpoint(parse_config("")).config
    assert "tls" not in cfg.transports and cfg.tls_cert_file is None


@pytest.mark.parametrize("text, line, message", [
    ("listen:\n  transports: [udp, tls]\n", 2, "listen.tls: cert .* is required"),
    ("listen:\n  transports: [udp]\n  tls: {cert: a.pem}\n", 3, "tls: given, but tls is not in transports"),
    ("listen:\n  transports: [udp, tls]\n  tls:\n    cert: /nonexistent.pem\n", 4, "cert: no such file"),
    ("listen:\n  transports: [udp, tls]\n  tls:\n    certificate: x\n", 4, "unknown key 'certificate'"),
    ("listen:\n  transports: [udp, tls]\n  tls:\n    verify: yes please\n", 4, "verify: expected bool"),
    ("listen:\n  transports: [udp, tls]\n  tls:\n    port: 70000\n", 4, "port: 70000 is not a port"),
    ("listen:\n  transports: [udp, sctp]\n", 2, "'sctp' is not udp, tcp or tls"),
    ("accounts:\n  - {username: a, password: b, server: c, transport: tls}\n", 2,
     "transport: tls needs tls in listen.transports"),
])
def test_mistakes_are_reported_with_their_line(text, line, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(text, "ivr.yaml")
    assert f"ivr.yaml:{line}" in str(error.value)


def test_a_key_that_does_not_match_the_certificate(pki: CertSet):
    text = f"listen:\n  transports: [tls]\n  tls:\n    cert: {pki.cert('server')}\n    key: {pki.key('other')}\n"
    with pytest.raises(ConfigError, match="cert/key: cannot be loaded") as error:
        parse_config(text, "ivr.yaml")
    assert "ivr.yaml:4" in str(error.value)
