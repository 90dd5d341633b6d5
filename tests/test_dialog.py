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


# -- edge cases (issue 23: every rule of §12 checked, not only the common path) ------------------


def test_uac_dialog_keeps_both_parties_and_the_identity_headers_in_requests():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request))
    assert dialog.local_party == '"Alice" <sip:alice@atlanta.com>;tag=a1'
    assert dialog.remote_party == "<sip:bob@biloxi.com>;tag=b2"
    assert dialog.secure is False
    bye = dialog.create_request("BYE")
    assert bye.method == "BYE"
    assert bye.headers.get("From") == dialog.local_party
    assert bye.headers.get("To") == dialog.remote_party
    assert bye.headers.get("Call-ID") == "call-1"
    assert bye.headers.get("Max-Forwards") == "70"
    assert bye.headers.get_all("Route") == []
    assert [name for name, _ in bye.headers.items()] == ["Max-Forwards", "From", "To", "Call-ID", "CSeq"]
    assert dialog.create_request("INFO", max_forwards=5).headers.get("Max-Forwards") == "5"
    ack = dialog.create_ack(7, max_forwards=9)
    assert ack.headers.get("Max-Forwards") == "9" and ack.uri == "sip:bob@10.0.0.2:5062"
    assert dialog.create_ack(7).headers.get("Max-Forwards") == "70"
    assert dialog.local_seq == 9  # two requests after the INVITE's 7; the ACKs took no number


def test_key_for_response_names_our_dialog_and_missing_tags_are_empty():
    request = invite()
    response = ok_for(request)
    dialog = Dialog.for_uac(request, response)
    assert Dialog.key_for_response(response) == dialog.key == ("call-1", "a1", "b2")
    untagged = Request("OPTIONS", "sip:bob@biloxi.com", Headers([
        ("From", "<sip:alice@atlanta.com>"), ("To", "<sip:bob@biloxi.com>"), ("Call-ID", "c")]))
    assert Dialog.key_for_request(untagged) == ("c", "", "")
    as_response = Response(200, "OK", untagged.headers.copy())
    assert Dialog.key_for_response(as_response) == ("c", "", "")


def test_uac_dialog_from_an_rfc2543_peer_without_tags():
    request = invite()
    request.headers.set("From", "<sip:alice@atlanta.com>")
    response = Response.for_request(request, 200)  # no To tag
    dialog = Dialog.for_uac(request, response)
    assert (dialog.local_tag, dialog.remote_tag) == ("", "")


def test_uac_target_falls_back_to_the_request_uri_without_a_usable_contact():
    for contact in (None, "*", "<not a uri>", " "):
        request = invite()
        response = Response.for_request(request, 200, to_tag="b2")
        if contact is not None:
            response.headers.add("Contact", contact)
        dialog = Dialog.for_uac(request, response)
        assert dialog.remote_target == "sip:bob@biloxi.com", contact
        assert dialog.next_hop().host == "biloxi.com"


def test_uas_target_falls_back_to_the_from_uri_without_a_contact():
    request = invite()
    request.headers.remove("Contact")
    dialog = Dialog.for_uas(request, "b2")
    assert dialog.remote_target == "sip:alice@atlanta.com"
    request.headers.add("Contact", "*")
    assert Dialog.for_uas(request, "b2").remote_target == "sip:alice@atlanta.com"


def test_uas_dialog_parties_sequence_numbers_and_an_existing_to_tag():
    request = invite()
    dialog = Dialog.for_uas(request, "b2")
    assert dialog.remote_party == '"Alice" <sip:alice@atlanta.com>;tag=a1'
    assert (dialog.local_seq, dialog.remote_seq) == (0, 7)
    assert dialog.secure is False
    # A request that already carries a To tag (a dialog being re-created) keeps it as it is.
    request.headers.set("To", "<sip:bob@biloxi.com>;tag=old")
    again = Dialog.for_uas(request, "b2")
    assert again.local_party == "<sip:bob@biloxi.com>;tag=old"
    # From without a tag (RFC 2543): the remote tag is empty.
    request.headers.set("From", "<sip:alice@atlanta.com>")
    assert Dialog.for_uas(request, "b2").remote_tag == ""


def test_a_sips_request_uri_makes_the_dialog_secure_whatever_its_case():
    for uri in ("sips:bob@biloxi.com", "SIPS:bob@biloxi.com"):
        request = invite()
        request.uri = uri
        assert Dialog.for_uas(request, "b2").secure is True
        assert Dialog.for_uac(request, ok_for(request)).secure is True


def test_remote_cseq_first_request_equal_number_and_cancel():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request))
    assert dialog.remote_seq is None
    first = Request("INFO", "sip:alice@10.0.0.1", request.headers.copy())
    first.headers.set("CSeq", "1 INFO")  # any number is fine while none was seen
    assert dialog.accept_remote_cseq(first) and dialog.remote_seq == 1
    retransmitted = Request("INFO", "sip:alice@10.0.0.1", request.headers.copy())
    retransmitted.headers.set("CSeq", "1 INFO")
    assert dialog.accept_remote_cseq(retransmitted) and dialog.remote_seq == 1
    older = Request("INFO", "sip:alice@10.0.0.1", request.headers.copy())
    older.headers.set("CSeq", "0 INFO")
    assert not dialog.accept_remote_cseq(older)
    assert dialog.remote_seq == 1  # a refused request does not move the number
    cancel = Request("CANCEL", "sip:alice@10.0.0.1", request.headers.copy())
    cancel.headers.set("CSeq", "0 CANCEL")
    assert dialog.accept_remote_cseq(cancel) and dialog.remote_seq == 1
    ack = Request("ACK", "sip:alice@10.0.0.1", request.headers.copy())
    ack.headers.set("CSeq", "5 ACK")
    assert dialog.accept_remote_cseq(ack) and dialog.remote_seq == 1  # not recorded either


def test_target_refresh_without_a_usable_contact_keeps_the_target():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request))
    for headers in ([], [("Contact", "*")], [("Contact", "<bad uri>")]):
        dialog.refresh_target(Request("UPDATE", "sip:alice@10.0.0.1", Headers(headers)))
        assert dialog.remote_target == "sip:bob@10.0.0.2:5062"
    dialog.refresh_target(Response(200, "OK", Headers([("Contact", '"Bob" <sip:bob@10.7.7.7>;expires=60')])))
    assert dialog.remote_target == "sip:bob@10.7.7.7"


def test_lr_is_recognised_in_any_case():
    request = invite()
    dialog = Dialog.for_uac(request, ok_for(request, ("<sip:p1.example.com;LR>",)))
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:bob@10.0.0.2:5062"
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;LR>"]


def test_strict_routing_with_several_routes_strips_uri_headers_from_the_request_uri():
    request = invite()
    routes = ("<sip:loose.example.com;lr>", "<sip:strict.example.com:5070;transport=tcp?X-Extra=1>")
    dialog = Dialog.for_uac(request, ok_for(request, routes))  # reversed: the strict one first
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:strict.example.com:5070;transport=tcp"
    assert bye.headers.get_all("Route") == ["<sip:loose.example.com;lr>", "<sip:bob@10.0.0.2:5062>"]
    assert dialog.route_set[0].endswith("?X-Extra=1>")  # the route set itself is left whole
    hop = dialog.next_hop()
    assert (hop.host, hop.port) == ("strict.example.com", 5070)
