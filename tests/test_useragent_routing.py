"""UserAgentCore in memory (tests/helpers/sipmem.py): where requests go: the registrar/proxy only for
our domain on its port, everything else direct; the outbound proxy takes every out-of-dialog request."""

from __future__ import annotations

import pytest

from tests.helpers.sipmem import (
    OFFER,
    PEER,
    SERVER,
    request,
    served_ua,
)

# --- routing: the server gets only what is in our domain on its port ---------------------------


@pytest.mark.parametrize("target, first_hop", [
    (f"sip:bob@127.0.0.1:{PEER[1]}", PEER),      # same host as the server, other port: direct
    ("sip:bob@127.0.0.1", SERVER),               # our domain, no port: the server
    (f"sip:bob@127.0.0.1:{SERVER[1]}", SERVER),  # our domain on the server's port
    ("100", SERVER),                             # an extension: sip:100@domain
    ("tel:+15551234", SERVER),                   # we cannot route tel: ourselves
    ("sip:bob@127.0.0.5:5070", ("127.0.0.5", 5070)),  # another host
])
def test_invite_goes_to_the_server_only_for_our_domain_and_its_port(net, target, first_hop):
    alice = served_ua(net)
    call_id = alice.invite(target, OFFER, net.now)
    net.pump()
    [invite] = net.sent(request("INVITE"))
    assert invite.dst == first_hop
    assert alice.first_hop(call_id) == first_hop


def test_outbound_proxy_takes_every_out_of_dialog_request(net):
    alice = served_ua(net, outbound_proxy="sip:127.0.0.1:15070")
    alice.invite(f"sip:bob@127.0.0.1:{PEER[1]}", OFFER, net.now)
    net.pump()
    [invite] = net.sent(request("INVITE"))
    assert invite.dst == ("127.0.0.1", 15070)
    assert invite.message.headers.get("Route") == "<sip:127.0.0.1:15070;lr>"
    assert invite.message.uri == f"sip:bob@127.0.0.1:{PEER[1]}"
