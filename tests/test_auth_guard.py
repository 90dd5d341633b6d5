"""Password guessing (limits.auth): the per-address delays and ban of :class:`AuthGuard`, its
memory bound, the configuration keys and their errors, the log fields, and that unknown users
cost the verifier the same digest as known ones. The real brute force against ``ivr serve`` is
tests/test_robust_auth_bruteforce.py."""

from __future__ import annotations

import asyncio
import time

import pytest

import simplesip.core.auth_server as auth_server
from ivr.admission import Admission, AuthGuard, log_field, reason_token, security_line
from ivr.call import CallContext
from ivr.config import ConfigError, InboundAuth, parse_config
from simplesip.core.auth import Challenge, build_authorization
from simplesip.core.auth_server import DigestVerifier

AUTH = "limits:\n  auth:\n    realm: ivr.test\n    users: {alice: secret}\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _guard(**policy: float) -> tuple[AuthGuard, Clock]:
    clock = Clock()
    return AuthGuard(InboundAuth("ivr", {"alice": "secret"}, **policy), clock), clock


# --- delays and ban ------------------------------------------------------------------------------


def test_failures_are_answered_later_and_later_then_the_address_is_banned() -> None:
    guard, clock = _guard()  # defaults: 3 at once, then 1, 2, 4, 8, 8, 8 s; the 10th bans
    verdicts = [guard.failed("192.0.2.1") for _ in range(10)]
    assert [v.delay for v in verdicts[:9]] == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert not any(v.banned for v in verdicts[:9]) and verdicts[9].banned
    assert guard.banned_for("192.0.2.1") == pytest.approx(600)
    assert guard.banned_for("192.0.2.2") == 0  # another address is not touched
    clock.now += 599
    assert guard.banned_for("192.0.2.1") == pytest.approx(1)
    clock.now += 1.5
    assert guard.banned_for("192.0.2.1") == 0  # the ban ends on its own
    again = guard.failed("192.0.2.1")  # and the next failure bans again at once
    assert again.banned


def test_a_success_clears_the_address_and_quiet_addresses_start_over() -> None:
    guard, clock = _guard(delay_after=1, delay=0.5, max_delay=2, ban_after=5, forget_after=60)
    assert [guard.failed("198.51.100.7").delay for _ in range(3)] == [0, 0.5, 1]
    guard.succeeded("198.51.100.7")
    assert guard.failed("198.51.100.7").delay == 0  # counting starts over
    assert guard.failed("198.51.100.7").delay == 0.5
    clock.now += 61
    assert guard.failed("198.51.100.7").failures == 1  # forgotten after forget_after


def test_an_address_is_one_address_whatever_the_form() -> None:
    admission_key = __import__("ivr.admission", fromlist=["_address_key"])._address_key
    assert admission_key("::ffff:192.0.2.1") == admission_key("192.0.2.1") == "192.0.2.1"
    assert admission_key("2001:DB8::1") == "2001:db8::1"
    assert admission_key("not-an-address") is None


def test_the_table_of_addresses_is_bounded_and_keeps_bans() -> None:
    guard, clock = _guard(ban_after=2, max_addresses=100)
    guard.failed("203.0.113.1")
    assert guard.failed("203.0.113.1").banned
    for n in range(5000):  # an attacker rotating addresses, one failure each
        clock.now += 0.01
        guard.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        assert len(guard) <= 100
    assert guard.banned_for("203.0.113.1") > 0  # evicted last: the ban still holds


def test_when_every_entry_is_banned_the_oldest_ban_goes() -> None:
    guard, clock = _guard(delay_after=0, ban_after=1, max_addresses=10)
    for n in range(30):
        clock.now += 1
        assert guard.failed(f"10.0.0.{n}").banned
        assert len(guard) <= 10
    assert guard.banned_for("10.0.0.29") > 0 and guard.banned_for("10.0.0.0") == 0


# --- configuration -------------------------------------------------------------------------------


def test_auth_guard_keys_are_read_with_defaults() -> None:
    auth = parse_config(AUTH).limits.auth
    assert (auth.delay_after, auth.delay, auth.max_delay, auth.ban_after, auth.ban_time,
            auth.forget_after, auth.max_addresses) == (3, 1.0, 8.0, 10, 600.0, 600.0, 10000)
    auth = parse_config(AUTH + "    delay_after: 0\n    delay: 0.25\n    max_delay: 2\n    ban_after: 4\n"
                        "    ban_time: 30\n    forget_after: 90\n    max_addresses: 500\n").limits.auth
    assert (auth.delay_after, auth.delay, auth.max_delay, auth.ban_after, auth.ban_time,
            auth.forget_after, auth.max_addresses) == (0, 0.25, 2.0, 4, 30.0, 90.0, 500)


@pytest.mark.parametrize("line, message", [
    ("ban_after: 0", "ivr.yaml:5: auth: ban_after must be >= 1"),
    ("delay: -1", "ivr.yaml:5: auth: delay must be >= 0"),
    ("ban_time: forever", "ivr.yaml:5: ban_time: expected float"),
    ("max_addresses: 2", "ivr.yaml:5: auth: max_addresses must be >= 10"),
    ("max_delay: 0.5", "ivr.yaml:5: auth: max_delay (0.5) must be >= delay (1)"),
    ("bantime: 60", "ivr.yaml:5: unknown key 'bantime' in limits.auth"),
])
def test_auth_guard_mistakes_point_at_the_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(AUTH + f"    {line}\n", source="ivr.yaml")
    assert str(error.value).startswith(message), str(error.value)


# --- log lines -----------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [
    'x ip=6.6.6.6', 'a"b', "line\nSECURITY auth-failure ip=6.6.6.6", "\u00e9l\u00e8ve", "a=b", "%41",
])
def test_a_user_name_is_one_field_that_forges_nothing(user: str) -> None:
    field = log_field(user)
    assert not set(field) & set(' ="\n\r\t=:') and field.isascii()
    line = security_line("auth-failure", "192.0.2.1", 5060, user, "wrong-password", failures=1)
    assert line.count("ip=") == 1 and line.count(" user=") == 1 and "\n" not in line


def test_log_fields_are_bounded_and_reasons_are_tokens() -> None:
    assert len(log_field("x" * 1000)) == 64 and log_field(None) == "-" and log_field("1001") == "1001"
    assert reason_token("wrong response") == "wrong-password"
    assert reason_token("unknown user") == "unknown-user"
    assert reason_token("algorithm SHA-9 \"x\" not offered") == "algorithm-sha-9-x-not-offered"


# --- the verifier: unknown users are not cheaper -------------------------------------------------


def test_unknown_users_cost_the_same_digest_as_wrong_passwords(monkeypatch) -> None:
    verifier = DigestVerifier("ivr", {"alice": "secret"}.get)
    challenge = Challenge.parse(verifier.challenge(time.time()))
    computed: list[str] = []
    real = auth_server.digest_response

    def counting(*args, **kwargs):
        computed.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(auth_server, "digest_response", counting)
    wrong = verifier.verify(build_authorization(challenge, "INVITE", "sip:ivr", "alice", "guess"),
                            "INVITE", time.time())
    unknown = verifier.verify(build_authorization(challenge, "INVITE", "sip:ivr", "mallory", "secret"),
                              "INVITE", time.time())
    assert not wrong.ok and not unknown.ok and wrong.outcome == unknown.outcome
    assert computed == ["alice", "mallory"]  # one digest each, through the same path
    # and the decoy password is no password: a response computed with an empty one fails too
    empty = verifier.verify(build_authorization(challenge, "INVITE", "sip:ivr", "mallory", ""),
                            "INVITE", time.time())
    assert not empty.ok


# --- the admission policy ------------------------------------------------------------------------


class _Invite:
    def __init__(self, call_id: str, authorization: str | None = None) -> None:
        self.id = call_id
        self.headers = {"Authorization": authorization} if authorization else {}


def _call(call_id: str, host: str, port: int) -> CallContext:
    return CallContext(call_id, None, source=(host, port))


def _admission(extra: str = "", max_calls: int = 100) -> tuple[Admission, dict]:
    engine = type("E", (), {"calls": {}})()
    config = parse_config(f"limits:\n  max_calls: {max_calls}\n  auth:\n    realm: ivr.test\n"
                          f"    users: {{alice: secret}}\n{extra}")
    return Admission(engine, config), engine.calls


def _authorization(admission: Admission, user: str, password: str) -> str:
    challenge = Challenge.parse(admission.challenge()["WWW-Authenticate"])
    return build_authorization(challenge, "INVITE", "sip:ivr@127.0.0.1", user, password)


def test_held_rejections_do_not_count_as_calls() -> None:
    admission, calls = _admission("    delay_after: 0\n    delay: 5\n    max_delay: 5\n", max_calls=2)
    for n in range(6):  # six guesses from six ports, each answer held back
        call = _call(f"g{n}", "192.0.2.9", 40000 + n)
        calls[call.id] = call
        assert admission(_Invite(call.id, _authorization(admission, "alice", f"guess{n}")), call) == 401
    assert admission.held == 6
    legit = _call("legit", "198.51.100.1", 5060)
    calls[legit.id] = legit
    assert admission(_Invite("legit", _authorization(admission, "alice", "secret")), legit) is None


async def test_a_held_answer_waits_on_a_timer_and_the_loop_runs_on() -> None:
    admission, calls = _admission("    delay_after: 0\n    delay: 0.4\n")
    call = _call("slow", "192.0.2.9", 40000)
    assert admission(_Invite("slow", _authorization(admission, "alice", "guess")), call) == 401
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(ticking())
    started = time.monotonic()
    await admission.hold(call)
    ticker.cancel()
    assert time.monotonic() - started >= 0.35
    assert ticks >= 10  # the loop kept running while the answer waited
    assert admission.held == 0
    await asyncio.wait_for(admission.hold(call), 0.2)  # nothing left to wait for


def test_right_password_on_an_expired_nonce_is_stale_not_a_failure(monkeypatch) -> None:
    admission, _ = _admission("    delay_after: 0\n    ban_after: 1\n")
    old = _authorization(admission, "alice", "secret")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # the nonce is now an hour old
    call = _call("late", "192.0.2.9", 40000)
    assert admission(_Invite("late", old), call) == 401
    assert "stale=true" in admission.reject_headers(401, call)["WWW-Authenticate"]
    assert admission.guard is not None and admission.guard.banned_for("192.0.2.9") == 0
    assert "stale" not in admission.reject_headers(401, _call("other", "192.0.2.9", 1))["WWW-Authenticate"]


def test_a_banned_address_is_refused_even_with_the_right_password_and_others_are_not() -> None:
    admission, _ = _admission("    delay_after: 0\n    delay: 0\n    max_delay: 0\n    ban_after: 2\n")
    for n, expected in enumerate([401, 403]):
        call = _call(f"g{n}", "192.0.2.9", 40000 + n)
        assert admission(_Invite(call.id, _authorization(admission, "bob", "x")), call) == expected
    right = _call("right", "192.0.2.9", 41000)
    assert admission(_Invite("right", _authorization(admission, "alice", "secret")), right) == 403
    bare = _call("bare", "192.0.2.9", 41001)
    assert admission(_Invite("bare"), bare) == 403  # not even a challenge
    other = _call("other", "192.0.2.10", 40000)
    assert admission(_Invite("other", _authorization(admission, "alice", "secret")), other) is None


def test_reload_keeps_failures_and_bans() -> None:
    admission, _ = _admission("    ban_after: 1\n")
    call = _call("g", "192.0.2.9", 40000)
    assert admission(_Invite("g", _authorization(admission, "alice", "x")), call) == 403
    admission.configure(parse_config("limits:\n  auth:\n    realm: ivr.test\n    users: {alice: secret}\n"
                                     "    ban_after: 3\n"))
    assert admission.guard is not None and admission.guard.banned_for("192.0.2.9") > 0
    assert admission.guard.policy.ban_after == 3


def test_security_events_carry_their_values_as_fields_for_json_logs(caplog) -> None:
    import json

    from ivr.logs import JsonLogFormatter

    admission, _ = _admission()
    call = _call("g", "192.0.2.9", 40000)
    with caplog.at_level("WARNING", logger="ivr.security"):
        admission(_Invite("g", _authorization(admission, "mal lory", "x")), call)
    record = next(r for r in caplog.records if r.name == "ivr.security")
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["message"].startswith("SECURITY auth-failure ip=192.0.2.9 port=40000 user=mal%20lory ")
    assert (entry["event"], entry["ip"], entry["user"], entry["reason"]) == (
        "auth-failure", "192.0.2.9", "mal%20lory", "unknown-user")
