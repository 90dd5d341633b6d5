"""SimpleSIPClient, the synchronous facade: two clients (each its own background loop) call each
other over loopback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from simplesip import (
    CallError,
    CallState,
    ConnectionError,
    SimpleSIPClient,
    pcm_to_ulaw,
    ulaw_to_pcm,
)
from simplesip.wire import g711
from tests.helpers.waiting import wait_for_sync


def _client(name: str) -> SimpleSIPClient:
    # No registrar in these tests; "localhost" keeps the (unused) server apart from the
    # 127.0.0.1 peers, which are called directly.
    client = SimpleSIPClient(name, "pw", "localhost", 5060, local_host="127.0.0.1",
                             rtp_port_range=(40000, 49000))
    assert client.connect(register=False)
    return client


@pytest.fixture
def pair():
    alice, bob = _client("alice"), _client("bob")
    yield alice, bob
    alice.disconnect()
    bob.disconnect()


def _heard_in_order(heard: list[bytes], sent: list[bytes], max_gap: int) -> bool:
    """Whether ``sent`` appears in ``heard`` frame by frame in order, with at most ``max_gap``
    other frames between them in all (0: one contiguous run)."""
    for start in (i for i, frame in enumerate(heard) if frame == sent[0]):
        position, gap = start, 0
        for frame in sent[1:]:
            position += 1
            while position < len(heard) and heard[position] != frame and gap < max_gap:
                position, gap = position + 1, gap + 1
            if position >= len(heard) or heard[position] != frame:
                break
        else:
            return True
    return False


def _bob_uri(bob: SimpleSIPClient) -> str:
    host, port = bob.local_address
    return f"sip:bob@{host}:{port}"


def test_public_names_are_exported():
    import simplesip

    for name in ("SimpleSIPClient", "CallState", "ConnectionError", "AuthenticationError",
                 "CallError", "ulaw_to_pcm", "pcm_to_ulaw", "alaw_to_pcm", "pcm_to_alaw",
                 "Endpoint", "EndpointConfig", "Call", "SIPParseError"):
        assert hasattr(simplesip, name), name
    assert issubclass(ConnectionError, __import__("builtins").ConnectionError)
    assert [s.value for s in CallState] == ["idle", "inviting", "ringing", "connected", "streaming"]
    assert ulaw_to_pcm(pcm_to_ulaw(b"\x00\x10" * 4)) == g711.ulaw_to_pcm(g711.pcm_to_ulaw(b"\x00\x10" * 4))


def test_call_with_incoming_callback_audio_and_hangup(pair):
    alice, bob = pair
    offered: list[tuple[str, dict]] = []

    def decide(caller, headers):
        offered.append((caller, headers))
        return True

    bob.set_incoming_call_callback(decide)
    frames: list[tuple[bytes, str]] = []
    bob.set_audio_callback(lambda audio, fmt: frames.append((audio, fmt)))  # default 'pcmu'
    assert alice.make_call(_bob_uri(bob)) is True
    assert alice.call_state in (CallState.CONNECTED, CallState.STREAMING)
    assert offered[0][0].startswith("sip:alice@") and "Call-ID" in offered[0][1]

    tone = (6000 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)).astype(np.int16)
    ulaw = g711.encode(tone, "PCMU").tobytes()
    started = time.monotonic()
    alice.send_audio(ulaw)
    # queued, not played inline: playing 4000 samples takes 0.5 s; the margin is for a busy machine
    assert time.monotonic() - started < 0.4
    assert alice.get_call_status()["audio_buffer_size"] > 0
    wait_for_sync(lambda: bob.call_state is CallState.STREAMING and alice.get_call_status()["audio_buffer_size"] == 0)
    # u-law in, u-law out, byte for byte: the tone's first ten frames, in order, with no gap
    # unless alice's loop stalled (her clock then skips the overdue ticks' packets: a gap, not
    # a burst); waiting out the jitter buffer delay
    sent = [ulaw[i:i + 160] for i in range(0, 1600, 160)]
    wait_for_sync(lambda: _heard_in_order([audio for audio, _ in list(frames)], sent,
                                          alice._endpoint.media_clock.catch_up_ticks),
                  message="the tone heard")
    assert all(fmt == "pcmu" and len(audio) == 160 for audio, fmt in frames[:5])

    status = alice.get_call_status()
    assert status["state"] == "streaming" and status["remote_rtp"].startswith("127.0.0.1:")
    assert status["call_duration"] > 0.3 and status["packets_out"] > 20
    alice.end_call()
    assert alice.call_state is CallState.IDLE
    wait_for_sync(lambda: bob.call_state is CallState.IDLE)


def test_answer_call_by_hand_pcm_format_and_dtmf(pair):
    alice, bob = pair
    bob.set_incoming_call_callback(lambda caller, headers: None)  # leave it ringing
    pcm_frames: list[bytes] = []
    alice.set_audio_callback(lambda audio, fmt: pcm_frames.append(audio), format="pcm")
    digits: list[str] = []
    bob.set_dtmf_callback(digits.append)
    dialler = threading.Thread(target=alice.make_call, args=(_bob_uri(bob),))
    dialler.start()
    wait_for_sync(lambda: bob.call_state is CallState.RINGING)
    wait_for_sync(lambda: alice.call_state is CallState.RINGING)  # once her side has read the 180
    assert bob.answer_call() is True
    dialler.join(10)  # returns as soon as make_call does; the bound is for a busy machine
    assert alice.call_state in (CallState.CONNECTED, CallState.STREAMING)
    bob.send_pcm(np.full(1600, 3000, dtype="<i2").tobytes())
    alice.send_dtmf("42")
    wait_for_sync(lambda: len(digits) == 2)
    assert digits == ["4", "2"]
    wait_for_sync(lambda: any(np.frombuffer(f, "<i2").mean() > 2500 for f in pcm_frames))
    assert all(len(f) == 320 for f in pcm_frames)
    bob.end_call()
    wait_for_sync(lambda: alice.call_state is CallState.IDLE)


def test_rejection_by_callback_status(pair):
    alice, bob = pair
    bob.set_incoming_call_callback(lambda caller, headers: 603)
    with pytest.raises(CallError) as err:
        alice.make_call(_bob_uri(bob))
    assert err.value.status == 603 and alice.call_state is CallState.IDLE


def test_cancel_while_ringing(pair):
    alice, bob = pair
    errors: list[Exception] = []

    def dial():
        try:
            alice.make_call(_bob_uri(bob))
        except CallError as exc:
            errors.append(exc)

    dialler = threading.Thread(target=dial)
    dialler.start()
    wait_for_sync(lambda: bob.call_state is CallState.RINGING)
    wait_for_sync(lambda: alice.call_state is CallState.RINGING)  # she has read the 180: CANCEL now
    alice.end_call()
    dialler.join(10)  # returns as soon as make_call does; the bound is for a busy machine
    assert errors and errors[0].status == 487
    wait_for_sync(lambda: bob.call_state is CallState.IDLE)


def test_errors_without_a_call_or_connection():
    client = SimpleSIPClient("carol", "pw", "127.0.0.1", 5060, local_host="127.0.0.1")
    assert client.call_state is CallState.IDLE and not client.running
    with pytest.raises(ConnectionError):
        client.make_call("100")
    for bad in ("", "two words", "sip:", "a@", "12;3"):
        with pytest.raises(ValueError):
            client.make_call(bad)
    with pytest.raises(RuntimeError):
        client.answer_call()
    with pytest.raises(RuntimeError):
        client.send_audio(b"\xff" * 160)
    with pytest.raises(ValueError):
        client.set_audio_callback(lambda a, f: None, format="mp3")
    client.end_call()  # nothing to end: no error
    assert client.get_call_status()["state"] == "idle"


def test_disconnect_releases_thread_and_sockets():
    before = threading.active_count()
    client = _client("dave")
    port = client.local_address[1]
    client.disconnect()
    assert not client.running and threading.active_count() == before
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the SIP port is free again
