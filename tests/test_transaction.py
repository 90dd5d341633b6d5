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
    Terminate,
    TimedOut,
    TimerConfig,
    TxState,
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
