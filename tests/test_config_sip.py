"""The ``sip:`` section of ivr.yaml reaches simplesip's EndpointConfig (DNS SRV, failover,
session timers), and mistakes in it point at their line."""

from __future__ import annotations

import pytest

from ivr.config import ConfigError, parse_config
from ivr.sip_adapter import make_endpoint


def test_defaults_leave_simplesip_defaults():
    endpoint = make_endpoint(parse_config(""))
    assert endpoint.config.dns_srv is True and endpoint.config.session_expires == 1800
    assert endpoint.config.min_se == 90 and endpoint.config.dns_nameservers is None


def test_sip_options_reach_the_endpoint():
    config = parse_config("sip: {dns_srv: false, dns_nameservers: ['127.0.0.1:5353'], dns_timeout: 1,\n"
                          "      failover_timeout: 2.5, session_expires: 0, min_se: 30,\n"
                          "      reliable_provisionals: false, max_redirects: 0, keepalive_interval: 0}\n")
    cfg = make_endpoint(config).config
    assert (cfg.dns_srv, cfg.dns_nameservers, cfg.dns_timeout) == (False, ("127.0.0.1:5353",), 1.0)
    assert (cfg.failover_timeout, cfg.session_expires, cfg.min_se) == (2.5, 0, 30)
    assert cfg.reliable_provisionals is False
    assert (cfg.max_redirects, cfg.keepalive_interval) == (0, 0.0)


@pytest.mark.parametrize("text, message", [
    ("sip: {srv: true}\n", "unknown key 'srv' in sip"),
    ("sip: {session_expires: -1}\n", "session_expires: must be at least 0"),
    ("sip: {session_expires: 60, min_se: 90}\n", "min_se: must not exceed session_expires"),
    ("sip: {dns_nameservers: [53]}\n", "dns_nameservers: expected a list of addresses"),
    ("sip: {dns_srv: 1}\n", "dns_srv: expected bool"),
])
def test_mistakes_are_reported_with_their_line(text, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(text, "ivr.yaml")
    assert "ivr.yaml:1" in str(error.value)
