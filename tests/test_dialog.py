"""RFC 3261 §12 dialogs: identity, route sets, loose and strict routing, CSeq, target refresh."""

from __future__ import annotations

from simplesip.core.dialog import Dialog
from simplesip.wire.headers import Headers
from simplesip.wire.message import Request, Response


def invite(record_routes: tuple[str, ...] = ()) -> Request:
    headers = Headers([
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"),
        ("From", '"Alice" <sip:alice@atlanta.com>;tag=a1'),
        ("To", "<sip:bob@biloxi.com>"),
        ("Call-ID", "call-1"),
        ("CSeq", "7 INVITE"),
        ("Contact", "<sip:alice@10.0.0.1:5060>"),
    ])
    for rr in record_routes:
        headers.add("Record-Route", rr)
    return Request("INVITE", "sip:bob@biloxi.com", headers)


def ok_for(request: Request, record_routes: tuple[str, ...] = (),
           contact: str = "<sip:bob@10.0.0.2:5062>") -> Response:
    response = Response.for_request(request, 200, to_tag="b2")
    for rr in record_routes:
        response.headers.add("Record-Route", rr)
    response.headers.add("Contact", contact)
    return response


RR = ("<sip:p2.biloxi.com;lr>", "<sip:p1.atlanta.com;lr>")  # as proxies add them: last hop first


def test_uac_dialog_takes_reversed_record_route_and_contact():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request, RR))
    assert dialog.key == ("call-1", "a1", "b2")
    assert dialog.route_set == ["<sip:p1.atlanta.com;lr>", "<sip:p2.biloxi.com;lr>"]
    assert dialog.remote_target == "sip:bob@10.0.0.2:5062"
    assert dialog.local_seq == 7 and dialog.remote_seq is None


def test_loose_routing_keeps_target_in_request_uri_and_routes_in_order():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request, RR))
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:bob@10.0.0.2:5062"
    assert bye.headers.get_all("Route") == dialog.route_set
    assert bye.cseq == (8, "BYE")
    assert bye.from_tag == "a1" and bye.to_tag == "b2" and bye.call_id == "call-1"
    hop = dialog.next_hop()
    assert (hop.host, hop.port) == ("p1.atlanta.com", None)


def test_strict_router_gets_request_uri_and_target_goes_last():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request, ("<sip:strict.example.com;maddr=1.2.3.4>",)))
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:strict.example.com;maddr=1.2.3.4"
    assert bye.headers.get_all("Route") == ["<sip:bob@10.0.0.2:5062>"]
    assert dialog.next_hop().host == "strict.example.com"


def test_ack_for_2xx_reuses_invite_cseq_and_does_not_advance():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request))
    ack = dialog.create_ack(7)
    assert ack.method == "ACK" and ack.cseq == (7, "ACK")
    assert dialog.create_request("INFO").cseq == (8, "INFO")


def test_uas_dialog_keeps_record_route_order_and_adds_our_tag():
    request = invite(RR)
    dialog = Dialog.for_uas(request, "b2")
    assert dialog.key == ("call-1", "b2", "a1")
    assert dialog.route_set == list(RR)
    assert dialog.local_party == "<sip:bob@biloxi.com>;tag=b2"
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:alice@10.0.0.1:5060"
    assert bye.from_tag == "b2" and bye.to_tag == "a1"
    assert bye.cseq[0] == 1
    # A request from the peer names the dialog with the tags the other way round.
    from_peer = Request("BYE", "sip:bob@10.0.0.2", Headers([
        ("From", bye.headers.get("To")), ("To", bye.headers.get("From")), ("Call-ID", "call-1")]))
    assert Dialog.key_for_request(from_peer) == dialog.key


def test_remote_cseq_must_not_go_backwards():
    request = invite()
    dialog = Dialog.for_uas(request, "b2")
    later = Request("INFO", "sip:bob@10.0.0.2", request.headers.copy())
    later.headers.set("CSeq", "9 INFO")
    assert dialog.accept_remote_cseq(later) and dialog.remote_seq == 9
    earlier = Request("BYE", "sip:bob@10.0.0.2", request.headers.copy())
    earlier.headers.set("CSeq", "8 BYE")
    assert not dialog.accept_remote_cseq(earlier)
    ack = Request("ACK", "sip:bob@10.0.0.2", request.headers.copy())
    ack.headers.set("CSeq", "7 ACK")
    assert dialog.accept_remote_cseq(ack)  # ACK and CANCEL reuse an old number


def test_target_refresh_moves_remote_target():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request))
    reinvite = Request("INVITE", "sip:alice@10.0.0.1", Headers([("Contact", "<sip:bob@10.9.9.9:7000>")]))
    dialog.refresh_target(reinvite)
    assert dialog.remote_target == "sip:bob@10.9.9.9:7000"
    assert dialog.create_request("BYE").uri == "sip:bob@10.9.9.9:7000"
