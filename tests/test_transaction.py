"""RFC 3261 §17 transaction state machines, driven directly: inputs in, effects out."""

from __future__ import annotations

from simplesip.core.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Deliver,
    Send,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    StartTimer,
    StopTimer,
    Terminate,
    TimedOut,
    TimerConfig,
    TxState,
    build_non2xx_ack,
    client_key,
    server_key,
)
from simplesip.wire.headers import Headers
from simplesip.wire.message import Request, Response

UDP = TimerConfig(t1=0.5, t2=4.0, t4=5.0)
TCP = TimerConfig(t1=0.5, t2=4.0, t4=5.0, reliable=True)


def make_request(method: str = "INVITE", branch: str = "z9hG4bKabc", to_tag: str | None = None,
                 routes: tuple[str, ...] = ()) -> Request:
    headers = Headers([("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch={branch}")])
    for route in routes:
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.com>;tag=1928301774")
    headers.add("To", "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""))
    headers.add("Call-ID", "a84b4c76e66710")
    headers.add("CSeq", f"314159 {'INVITE' if method == 'ACK' else method}")
    return Request(method, "sip:bob@example.com", headers)


def make_response(request: Request, status: int, to_tag: str | None = "xyz") -> Response:
    return Response.for_request(request, status, to_tag=to_tag if status > 100 else None)


def timers(effects) -> dict[str, float]:
    return {e.name: e.delay for e in effects if isinstance(e, StartTimer)}


def sent(effects) -> list:
    return [e.message for e in effects if isinstance(e, Send)]


def test_client_invite_timer_a_doubles_without_cap_and_timer_b_times_out():
    tx = ClientInviteTransaction(make_request(), UDP)
    start = tx.start()
    assert sent(start) and timers(start) == {"A": 0.5, "B": 32.0}
    intervals = []
    for _ in range(6):
        effects = tx.on_timer("A")
        assert len(sent(effects)) == 1
        intervals.append(timers(effects)["A"])
    # 17.1.1.2: Timer A doubles every time (no T2 cap for INVITE).
    assert intervals == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    effects = tx.on_timer("B")
    assert TimedOut("B") in effects and Terminate() in effects
    assert tx.state == TxState.TERMINATED


def test_client_invite_provisional_stops_retransmissions_and_timer_b():
    tx = ClientInviteTransaction(make_request(), UDP)
    tx.start()
    effects = tx.on_response(make_response(tx.request, 180))
    assert tx.state == TxState.PROCEEDING
    assert any(isinstance(e, Deliver) for e in effects)
    assert tx.on_timer("A") == [] and tx.on_timer("B") == []  # a ringing phone may ring for long


def test_client_invite_non2xx_builds_ack_in_transaction():
    invite = make_request(routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    tx = ClientInviteTransaction(invite, UDP)
    tx.start()
    effects = tx.on_response(make_response(invite, 486))
    [ack] = sent(effects)
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert ack.vias[0].branch == invite.vias[0].branch  # same transaction
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.to_tag == "xyz" and ack.cseq == (314159, "ACK")
    assert timers(effects) == {"D": 32.0}
    # A retransmitted 486 is answered with the same ACK, not delivered again.
    again = tx.on_response(make_response(invite, 486))
    assert sent(again) == [ack] and not any(isinstance(e, Deliver) for e in again)
    assert Terminate() in tx.on_timer("D")


def test_client_invite_2xx_goes_to_accepted_and_delivers_retransmissions():
    tx = ClientInviteTransaction(make_request(), UDP)
    tx.start()
    ok = make_response(tx.request, 200)
    assert Deliver(ok) in tx.on_response(ok)
    assert tx.state == TxState.ACCEPTED and not sent(tx.on_response(ok))  # the core ACKs 2xx
    assert Deliver(ok) in tx.on_response(ok)
    assert Terminate() in tx.on_timer("M")


def test_client_invite_on_tcp_has_no_timer_a_and_no_wait_in_completed():
    tx = ClientInviteTransaction(make_request(), TCP)
    assert "A" not in timers(tx.start())
    effects = tx.on_response(make_response(tx.request, 503))
    assert Terminate() in effects and tx.state == TxState.TERMINATED


def test_client_non_invite_timer_e_caps_at_t2_and_timer_f_times_out():
    tx = ClientNonInviteTransaction(make_request("OPTIONS"), UDP)
    assert timers(tx.start()) == {"E": 0.5, "F": 32.0}
    intervals = [timers(tx.on_timer("E"))["E"] for _ in range(5)]
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0]
    tx.on_response(make_response(tx.request, 100))
    assert timers(tx.on_timer("E"))["E"] == 4.0  # Proceeding: fixed at T2
    effects = tx.on_timer("F")
    assert TimedOut("F") in effects and tx.state == TxState.TERMINATED


def test_client_non_invite_final_then_timer_k():
    tx = ClientNonInviteTransaction(make_request("BYE", to_tag="b"), UDP)
    tx.start()
    ok = make_response(tx.request, 200)
    effects = tx.on_response(ok)
    assert Deliver(ok) in effects and timers(effects) == {"K": 5.0}
    assert tx.on_response(ok) == []  # absorbed
    assert Terminate() in tx.on_timer("K")


def test_server_invite_absorbs_retransmission_and_retransmits_final_until_ack():
    invite = make_request()
    tx = ServerInviteTransaction(invite, UDP)
    trying = make_response(invite, 100)
    assert sent(tx.send_response(trying)) == [trying]
    assert sent(tx.on_request(invite)) == [trying]  # retransmitted INVITE -> last response again
    busy = make_response(invite, 486)
    effects = tx.send_response(busy)
    assert timers(effects) == {"H": 32.0, "G": 0.5}
    assert [timers(tx.on_timer("G"))["G"] for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    ack = make_request("ACK", to_tag="xyz")
    effects = tx.on_request(ack)
    assert tx.state == TxState.CONFIRMED and timers(effects) == {"I": 5.0}
    assert tx.on_timer("G") == []
    assert Terminate() in tx.on_timer("I")


def test_server_invite_timer_h_reports_missing_ack():
    tx = ServerInviteTransaction(make_request(), UDP)
    tx.send_response(make_response(tx.request, 404))
    effects = tx.on_timer("H")
    assert TimedOut("H") in effects and Terminate() in effects


def test_server_invite_2xx_accepted_delivers_ack():
    tx = ServerInviteTransaction(make_request(), UDP)
    effects = tx.send_response(make_response(tx.request, 200))
    assert tx.state == TxState.ACCEPTED and timers(effects) == {"L": 32.0}
    ack = make_request("ACK", branch="z9hG4bKother", to_tag="xyz")
    assert Deliver(ack) in tx.on_request(ack)
    assert tx.on_request(tx.request) == []  # the core, not the transaction, repeats 2xx


def test_server_non_invite_repeats_final_and_ends_after_timer_j():
    request = make_request("OPTIONS")
    tx = ServerNonInviteTransaction(request, UDP)
    assert tx.on_request(request) == []  # nothing sent yet: nothing to repeat
    ok = make_response(request, 200)
    assert timers(tx.send_response(ok)) == {"J": 32.0}
    assert sent(tx.on_request(request)) == [ok]
    assert Terminate() in tx.on_timer("J")


def test_server_non_invite_on_tcp_terminates_at_once():
    tx = ServerNonInviteTransaction(make_request("OPTIONS"), TCP)
    effects = tx.send_response(make_response(tx.request, 200))
    assert Terminate() in effects and tx.state == TxState.TERMINATED


def test_keys_match_ack_to_invite_and_keep_cancel_apart():
    invite = make_request()
    ack = make_request("ACK", to_tag="xyz")
    cancel = make_request("CANCEL")
    assert server_key(ack) == server_key(invite)
    assert server_key(cancel) != server_key(invite)
    assert server_key(cancel, "INVITE") == server_key(invite)
    assert client_key(make_response(invite, 200)) == client_key(invite)


def test_rfc2543_key_without_magic_cookie():
    old = make_request(branch="1234")  # no z9hG4bK: fall back to the request's identity (17.2.3)
    again = make_request(branch="1234")
    other_cseq = make_request(branch="1234")
    other_cseq.headers.set("CSeq", "314160 INVITE")
    assert server_key(old)[0] == "2543"
    assert server_key(old) == server_key(again)
    assert server_key(old) != server_key(other_cseq)


def test_rfc2543_ack_must_carry_the_to_tag_we_sent():
    tx = ServerInviteTransaction(make_request(branch="old"), UDP)
    tx.send_response(make_response(tx.request, 486, to_tag="mine"))
    assert tx.on_request(make_request("ACK", branch="old", to_tag="someone-else")) == []
    assert tx.state == TxState.COMPLETED
    tx.on_request(make_request("ACK", branch="old", to_tag="mine"))
    assert tx.state == TxState.CONFIRMED


def test_server_invite_retransmitted_invite_in_completed_gets_the_final_again():
    invite = make_request()
    tx = ServerInviteTransaction(invite, UDP)
    tx.send_response(make_response(invite, 180))
    busy = make_response(invite, 486)
    tx.send_response(busy)
    assert tx.state == TxState.COMPLETED
    # 17.2.1: in Completed a retransmitted INVITE is answered with the final response, not the 180.
    assert tx.on_request(invite) == [Send(busy)]
    assert tx.on_request(invite) == [Send(busy)]
    # The TU can no longer change the answer.
    assert tx.send_response(make_response(invite, 200)) == [] and tx.last_response is busy
    tx.on_request(make_request("ACK", to_tag="xyz"))
    assert tx.state == TxState.CONFIRMED
    assert tx.on_request(invite) == []  # Confirmed absorbs retransmissions (17.2.1)


def test_server_invite_on_tcp_has_no_timer_g_and_timer_i_is_zero():
    invite = make_request()
    tx = ServerInviteTransaction(invite, TCP)
    effects = tx.send_response(make_response(invite, 603))
    assert timers(effects) == {"H": 32.0}  # no G: a reliable transport retransmits for us
    effects = tx.on_request(make_request("ACK", to_tag="xyz"))
    # Timer I is 0 on reliable transports: Confirmed ends at once instead of waiting T4.
    assert "I" not in timers(effects) and Terminate() in effects
    assert tx.state == TxState.TERMINATED
    assert tx.on_request(invite) == [] and tx.on_timer("I") == []


# --- every transition's effects, in full (the effects are the transaction's whole output) -----


def test_non2xx_ack_on_the_wire():
    invite = make_request(routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    invite.headers.set("Max-Forwards", "12")
    ack = build_non2xx_ack(invite, make_response(invite, 486))
    assert ack.serialize() == (
        b"ACK sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
        b"Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com;lr>\r\n"
        b"Max-Forwards: 12\r\n"
        b"From: <sip:alice@example.com>;tag=1928301774\r\n"
        b"To: <sip:bob@example.com>;tag=xyz\r\n"
        b"Call-ID: a84b4c76e66710\r\nCSeq: 314159 ACK\r\nContent-Length: 0\r\n\r\n")
    invite.headers.remove("Max-Forwards")  # an INVITE without one still gets the default 70
    assert build_non2xx_ack(invite, make_response(invite, 486)).headers.get("Max-Forwards") == "70"


def test_client_invite_effects_in_full():
    invite = make_request()
    tx = ClientInviteTransaction(invite, UDP)
    assert tx.key == ("z9hG4bKabc", "INVITE") and tx.ack is None
    assert tx.start() == [Send(invite), StartTimer("B", 32.0), StartTimer("A", 0.5)]
    ringing = make_response(invite, 180)
    assert tx.on_response(ringing) == [StopTimer("A"), StopTimer("B"), Deliver(ringing)]
    assert tx.on_response(ringing) == [StopTimer("A"), StopTimer("B"), Deliver(ringing)]
    assert tx.on_timer("D") == [] and tx.on_timer("M") == []  # not armed in Proceeding
    ok = make_response(invite, 299)
    assert tx.on_response(ok) == [StopTimer("A"), StopTimer("B"), StartTimer("M", 32.0), Deliver(ok)]
    assert tx.on_response(make_response(invite, 300)) == []  # a 3xx after a 2xx is not ours to ACK
    assert tx.on_timer("A") == [] and tx.on_timer("B") == []
    assert tx.on_timer("M") == [Terminate()] and tx.state == TxState.TERMINATED
    assert tx.on_timer("M") == []


def test_client_invite_300_is_a_final_failure():
    invite = make_request()
    tx = ClientInviteTransaction(invite, UDP)
    tx.start()
    moved = make_response(invite, 300)
    effects = tx.on_response(moved)
    assert tx.state == TxState.COMPLETED and tx.ack is not None
    assert effects == [StopTimer("A"), StopTimer("B"), Send(tx.ack), Deliver(moved), StartTimer("D", 32.0)]
    assert tx.on_response(make_response(invite, 200)) == []  # a 2xx in Completed is not resent
    assert tx.on_timer("A") == [] and tx.on_timer("B") == []
    assert tx.on_timer("D") == [Terminate()]


def test_client_invite_timer_effects_in_full():
    invite = make_request()
    tx = ClientInviteTransaction(invite, UDP)
    tx.start()
    assert tx.on_timer("A") == [Send(invite), StartTimer("A", 1.0)]
    assert tx.on_timer("D") == [] and tx.on_timer("M") == [] and tx.on_timer("K") == []
    assert tx.on_timer("B") == [StopTimer("A"), TimedOut("B"), Terminate()]
    assert tx.on_timer("A") == [] and tx.on_timer("B") == []
    tcp = ClientInviteTransaction(invite, TCP)
    assert tcp.start() == [Send(invite), StartTimer("B", 32.0)]
    assert tcp.on_response(make_response(invite, 404))[-1] == Terminate()


def test_client_non_invite_effects_in_full():
    request = make_request("OPTIONS")
    tx = ClientNonInviteTransaction(request, UDP)
    assert tx.key == ("z9hG4bKabc", "OPTIONS")
    assert tx.start() == [Send(request), StartTimer("F", 32.0), StartTimer("E", 0.5)]
    assert tx.on_timer("E") == [Send(request), StartTimer("E", 1.0)]
    trying = make_response(request, 100)
    assert tx.on_response(trying) == [Deliver(trying)] and tx.state == TxState.PROCEEDING
    assert tx.on_timer("E") == [Send(request), StartTimer("E", 4.0)]
    assert tx.on_timer("K") == []
    ok = make_response(request, 200)
    assert tx.on_response(ok) == [StopTimer("E"), StopTimer("F"), Deliver(ok), StartTimer("K", 5.0)]
    assert tx.on_timer("E") == [] and tx.on_timer("F") == []
    assert tx.on_timer("K") == [Terminate()] and tx.on_timer("K") == []
    timed_out = ClientNonInviteTransaction(request, UDP)
    timed_out.start()
    timed_out.on_response(trying)
    assert timed_out.on_timer("F") == [StopTimer("E"), TimedOut("F"), Terminate()]
    assert timed_out.on_timer("E") == [] and timed_out.state == TxState.TERMINATED
    tcp = ClientNonInviteTransaction(request, TCP)
    assert tcp.start() == [Send(request), StartTimer("F", 32.0)]
    assert tcp.on_response(ok) == [StopTimer("E"), StopTimer("F"), Deliver(ok), Terminate()]
    assert tcp.state == TxState.TERMINATED


def test_server_invite_effects_in_full():
    invite = make_request()
    tx = ServerInviteTransaction(invite, UDP)
    assert tx.state == TxState.PROCEEDING and tx.on_request(invite) == []  # nothing sent yet
    ringing = make_response(invite, 180)
    assert tx.send_response(ringing) == [Send(ringing)]
    busy = make_response(invite, 300)
    assert tx.send_response(busy) == [Send(busy), StartTimer("H", 32.0), StartTimer("G", 0.5)]
    assert tx.on_timer("G") == [Send(busy), StartTimer("G", 1.0)]
    assert tx.on_timer("I") == [] and tx.on_timer("L") == []
    assert tx.on_request(make_request("ACK", to_tag="xyz")) == [StopTimer("G"), StopTimer("H"), StartTimer("I", 5.0)]
    assert tx.on_request(make_request("ACK", to_tag="xyz")) == []  # absorbed in Confirmed
    assert tx.on_timer("G") == [] and tx.on_timer("H") == []
    assert tx.on_timer("I") == [Terminate()] and tx.state == TxState.TERMINATED
    assert tx.on_timer("I") == []
    timed_out = ServerInviteTransaction(invite, UDP)
    timed_out.send_response(busy)
    assert timed_out.on_timer("H") == [StopTimer("G"), TimedOut("H"), Terminate()]
    assert timed_out.on_timer("G") == [] and timed_out.on_request(invite) == []


def test_server_invite_2xx_effects_in_full():
    invite = make_request()
    tx = ServerInviteTransaction(invite, UDP)
    ok = make_response(invite, 299)
    assert tx.send_response(ok) == [Send(ok), StartTimer("L", 32.0)] and tx.state == TxState.ACCEPTED
    assert tx.send_response(make_response(invite, 500)) == []
    assert tx.on_timer("G") == [] and tx.on_timer("H") == []
    assert tx.on_timer("L") == [Terminate()] and tx.state == TxState.TERMINATED
    assert tx.on_request(make_request("ACK", to_tag="xyz")) == []


def test_server_non_invite_effects_in_full():
    request = make_request("OPTIONS")
    tx = ServerNonInviteTransaction(request, UDP)
    trying = make_response(request, 100)
    assert tx.send_response(trying) == [Send(trying)] and tx.state == TxState.PROCEEDING
    assert tx.on_request(request) == [Send(trying)]
    ok = make_response(request, 200)
    assert tx.send_response(ok) == [Send(ok), StartTimer("J", 32.0)] and tx.state == TxState.COMPLETED
    assert tx.send_response(make_response(request, 500)) == []
    assert tx.on_timer("K") == [] and tx.on_timer("J") == [Terminate()]
    assert tx.state == TxState.TERMINATED and tx.on_request(request) == [] and tx.on_timer("J") == []
    tcp = ServerNonInviteTransaction(request, TCP)
    assert tcp.send_response(ok) == [Send(ok), Terminate()]


def test_keys_tell_transactions_apart():
    invite = make_request()
    assert client_key(make_request(branch="z9hG4bKother")) != client_key(invite)
    assert server_key(make_request(branch="z9hG4bKother")) != server_key(invite)
    # sent-by is compared without case (hosts are case-insensitive), port included.
    upper = make_request()
    upper.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc".replace("10.0.0.1", "HOST.Example.com"))
    lower = make_request()
    lower.headers.set("Via", "SIP/2.0/UDP host.example.COM:5060;branch=z9hG4bKabc")
    assert server_key(upper) == server_key(lower)
    assert server_key(upper)[:4] == ("3261", "z9hG4bKabc", "host.example.com", 5060)
    # RFC 2543 keys: every part of the request's identity counts.
    base = make_request("BYE", branch="1", to_tag="t1")
    assert server_key(base) == server_key(make_request("BYE", branch="1", to_tag="t1"))
    assert server_key(base) != server_key(make_request("BYE", branch="1", to_tag="t2"))
    other_from = make_request("BYE", branch="1", to_tag="t1")
    other_from.headers.set("From", "<sip:alice@example.com>;tag=other")
    assert server_key(base) != server_key(other_from)
    other_via = make_request("BYE", branch="1", to_tag="t1")
    other_via.headers.set("Via", "SIP/2.0/UDP 10.0.0.2:5060;branch=1")
    assert server_key(base) != server_key(other_via)
    # An RFC 2543 INVITE's key leaves the To tag out (the ACK carries ours).
    assert server_key(make_request(branch="1")) == server_key(make_request("ACK", branch="1", to_tag="t9"))
    assert server_key(make_request(branch="1"))[2] == ""


def test_transaction_states_and_keys_after_each_timer():
    request = make_request("OPTIONS")
    server = ServerNonInviteTransaction(request, UDP)
    assert server.key == server_key(request) == ("3261", "z9hG4bKabc", "10.0.0.1", 5060, "OPTIONS")
    client = ClientNonInviteTransaction(request, UDP)
    client.start()
    client.on_response(make_response(request, 200))
    client.on_timer("K")
    assert client.state == TxState.TERMINATED
    invite = make_request()
    assert ServerInviteTransaction(invite, UDP).key == server_key(invite)
    timed_out = ServerInviteTransaction(invite, UDP)
    timed_out.send_response(make_response(invite, 480))
    timed_out.on_timer("H")
    assert timed_out.state == TxState.TERMINATED


def test_client_invite_acks_a_retransmitted_300_too():
    invite = make_request()
    tx = ClientInviteTransaction(invite, UDP)
    tx.start()
    tx.on_response(make_response(invite, 300))
    assert tx.on_response(make_response(invite, 300)) == [Send(tx.ack)]


def test_rfc3261_ack_is_matched_by_branch_alone():
    # 17.2.3: with a z9hG4bK branch the To tag plays no part in matching the ACK.
    tx = ServerInviteTransaction(make_request(), UDP)
    tx.send_response(make_response(tx.request, 486, to_tag="mine"))
    tx.on_request(make_request("ACK", to_tag="other"))
    assert tx.state == TxState.CONFIRMED


def test_rfc2543_ack_without_tags_confirms_a_response_without_one():
    tx = ServerInviteTransaction(make_request(branch="old"), UDP)
    tx.send_response(make_response(tx.request, 486, to_tag=None))
    tx.on_request(make_request("ACK", branch="old"))
    assert tx.state == TxState.CONFIRMED
