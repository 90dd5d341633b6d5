"""A real password-guessing client against ``ivr serve`` (docs/security.md, "Password guessing").

The guesser is a raw UDP client computing real RFC 2617/7616 digests with hashlib (not the code
under test): one challenge, then one guess per INVITE, each from a new source port of 127.0.0.1,
waiting for each answer as sipvicious' svcrack does. The server's answers must come later and
later, then 403 for every INVITE from that address (the right password included) until the ban
ends by itself; a caller on 127.0.0.2 is served all along, also while a guess's answer is held
back; existing and unknown users get the same answers; and the fail2ban filter documented in
docs/security.md finds every logged failure, with the guesser's address and no other.

Timings are checked from below only (an answer held back cannot come early), plus orderings.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from tests.helpers.paths import PROJECT
from tests.helpers.robust_server import (
    REJECT_FLOW,
    IvrServeProcess,
    SipClient,
    ack_for,
    header_of,
    invite,
    status_of,
)

REALM = "ivr.test"
PASSWORD = "c0rrect-h0rse"
DELAY, MAX_DELAY, DELAY_AFTER, BAN_AFTER, BAN_TIME = 0.5, 3.0, 2, 7, 6.0
CONFIG = (f"limits:\n  rate: {{per_source: 1000, burst: 1000}}\n  auth:\n    realm: {REALM}\n"
          f"    users: {{alice: {PASSWORD}}}\n    delay_after: {DELAY_AFTER}\n    delay: {DELAY}\n"
          f"    max_delay: {MAX_DELAY}\n    ban_after: {BAN_AFTER}\n    ban_time: {BAN_TIME}\n"
          f"    forget_after: 120\n")
#: Authenticated callers reach the flow, which refuses them 486: a 486 means "got past admission".
ADMITTED = 486


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest(challenge: str, user: str, password: str, uri: str) -> str:
    """An Authorization value for INVITE answering ``challenge`` (qop=auth, MD5)."""
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    cnonce = secrets.token_hex(8)
    response = _md5(f"{_md5(f'{user}:{REALM}:{password}')}:{nonce}:00000001:{cnonce}:auth:"
                    f"{_md5(f'INVITE:{uri}')}")
    return (f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="{cnonce}"')


class Attempt:
    """One INVITE from a fresh source port; :meth:`answer` waits for its final response."""

    def __init__(self, server: IvrServeProcess, authorization: str | None, host: str = "127.0.0.1") -> None:
        self.server, self.client = server, SipClient(host)
        self.request = invite(server.address, self.client.port, local_host=host,
                              extra_headers=f"Authorization: {authorization}\r\n" if authorization else "")
        self.sent = time.monotonic()
        self.client.send(self.request, server.address)
        self.response: bytes | None = None
        self.received = 0.0

    def answer(self, timeout: float = 20.0) -> bytes | None:
        self.response = self.client.final_response(timeout)
        self.received = time.monotonic()
        if self.response is not None:
            self.client.send(ack_for(self.request, self.response), self.server.address)
        self.client.close()
        return self.response

    @property
    def status(self) -> int | None:
        return status_of(self.response)

    @property
    def elapsed(self) -> float:
        return self.received - self.sent


def challenge_of(server: IvrServeProcess, host: str = "127.0.0.1") -> str:
    first = Attempt(server, None, host)
    response = first.answer()
    assert status_of(response) == 401, response
    return header_of(response, "WWW-Authenticate") or ""


def guess(server: IvrServeProcess, challenge: str, user: str, password: str, host: str = "127.0.0.1") -> Attempt:
    uri = f"sip:ivr@{server.address[0]}:{server.address[1]}"
    return Attempt(server, digest(challenge, user, password, uri), host)


def legit_call(server: IvrServeProcess) -> tuple[int | None, int | None]:
    """A caller on 127.0.0.2 doing what a phone does: INVITE, 401, INVITE with the right password."""
    challenge = Attempt(server, None, "127.0.0.2")
    first = challenge.answer()
    second = guess(server, header_of(first, "WWW-Authenticate") or "", "alice", PASSWORD, "127.0.0.2")
    return challenge.status, status_of(second.answer())


def _challenge_shape(response: bytes) -> tuple:
    """What a 401 shows a guesser, with the nonce reduced to its shape."""
    value = header_of(response, "WWW-Authenticate") or ""
    names = sorted(line.split(b":", 1)[0].lower() for line in response.split(b"\r\n\r\n")[0].split(b"\r\n")[1:])
    return status_of(response), tuple(names), re.sub(r'nonce="[0-9a-f]+\.[0-9a-f]{16}\.[0-9a-f]{32}"', "nonce=N", value)


def documented_filter() -> str:
    """The fail2ban filter of docs/security.md, as written there."""
    text = (PROJECT / "docs" / "security.md").read_text()
    match = re.search(r"```ini\n(# /etc/fail2ban/filter\.d/ivr\.conf\n\[Definition\]\n.*?)```", text, re.S)
    assert match, "docs/security.md has no fail2ban filter block"
    return match.group(1)


def fail2ban_matches(log: str, filter_text: str, folder: Path) -> list[str]:
    """The addresses fail2ban-regex (Debian's fail2ban, installed by .ci/run) finds in ``log``
    with the filter."""
    log_file, filter_file = folder / "ivr.log", folder / "ivr-filter.conf"
    log_file.write_text(log)
    filter_file.write_text(filter_text)
    assert shutil.which("fail2ban-regex"), "fail2ban-regex is missing: apt-get install fail2ban (.ci/run does)"
    out = subprocess.run(["fail2ban-regex", "-o", "ip", str(log_file), str(filter_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_password_guessing_is_slowed_then_banned_and_logged_for_fail2ban(tmp_path: Path) -> None:
    with IvrServeProcess(tmp_path / "serve", flow=REJECT_FLOW, config_extra=CONFIG) as server:
        challenge = challenge_of(server)
        # Guesses 1..6 fail (users alice and mallory, who does not exist, and a user name that
        # tries to forge a log line); each from its own port.
        users = ["alice", "mallory", "alice", "x ip=6.6.6.6 SECURITY auth-failure ip=6.6.6.6", "alice"]
        attempts = []
        for n, user in enumerate(users):
            attempt = guess(server, challenge, user, f"guess{n}")
            attempt.answer()
            attempts.append(attempt)
        # Guess 6 is held back longest: meanwhile a phone on 127.0.0.2 gets in, both round trips.
        held = guess(server, challenge, "mallory", "guess5")
        assert legit_call(server) == (401, ADMITTED)
        legit_done = time.monotonic()
        held.answer()
        attempts.append(held)
        assert legit_done < held.received, "the held answer blocked the other caller"

        statuses = [a.status for a in attempts]
        assert statuses == [401] * 6, statuses
        expected = [0.0 if n <= DELAY_AFTER else min(MAX_DELAY, DELAY * 2 ** (n - DELAY_AFTER - 1))
                    for n in range(1, 7)]  # 0, 0, 0.5, 1, 2, 3
        elapsed = [a.elapsed for a in attempts]
        for took, least in zip(elapsed, expected):
            assert took >= least - 0.05, (elapsed, expected)
        assert max(elapsed[:2]) < elapsed[4] and elapsed[3] < elapsed[5], elapsed  # they grow
        # Existing and unknown users are answered alike (the nonce differs, not its form).
        assert len({_challenge_shape(a.response) for a in attempts}) == 1  # type: ignore[arg-type]
        assert _challenge_shape(attempts[0].response)[0] == 401  # type: ignore[arg-type]

        # Guess 7 bans the address: 403 at once, and from then on every INVITE from it, on any
        # port, the right password included, while 127.0.0.2 is still served.
        banning = guess(server, challenge, "alice", "guess6")
        assert status_of(banning.answer()) == 403
        ban_began = banning.sent
        assert status_of(guess(server, challenge, "alice", PASSWORD).answer()) == 403
        assert status_of(Attempt(server, None).answer()) == 403
        assert legit_call(server) == (401, ADMITTED)

        # The ban lifts by itself after ban_time: the right password then gets in.
        deadline = ban_began + BAN_TIME + 20
        while True:
            attempt = guess(server, challenge_of(server, "127.0.0.2"), "alice", PASSWORD)
            if attempt.answer() is not None and attempt.status == ADMITTED:
                break
            assert attempt.status == 403, attempt.response
            assert time.monotonic() < deadline, "the ban did not lift"
            time.sleep(0.5)
        assert attempt.received - ban_began >= BAN_TIME
        assert server.alive()
        log = server.log()

    lines = [line for line in log.splitlines() if " ivr.security: SECURITY " in line]
    failures = [line for line in lines if " auth-failure " in line]
    assert len(failures) == 6, lines
    assert all(" ip=127.0.0.1 " in line for line in lines), lines
    assert [re.search(r" delay=(\S+)", line).group(1) for line in failures] == ["0", "0", "0.5", "1", "2", "3"]  # type: ignore[union-attr]
    assert {re.search(r" reason=(\S+)", line).group(1) for line in failures} == {"wrong-password", "unknown-user"}  # type: ignore[union-attr]
    assert len({re.search(r" port=(\d+)", line).group(1) for line in failures}) == 6  # type: ignore[union-attr]
    assert "user=x%20ip%3D6.6.6.6%20SECURITY%20auth-failure%20ip%3D6.6.6.6 " in "\n".join(failures)
    assert sum(" auth-ban " in line for line in lines) == 1
    assert any(" auth-blocked " in line for line in lines)

    # The documented fail2ban filter, run by fail2ban-regex over what the server printed (plus a
    # line where another logger quotes hostile text), finds exactly the security lines, all of
    # them 127.0.0.1: the forged address in the user name is never read.
    forged = ("2026-01-01 00:00:00,000 INFO ivr.calls: call x WARNING ivr.security: SECURITY "
              "auth-failure ip=6.6.6.6 port=1 user=a reason=b\n")
    found = fail2ban_matches(log + forged, documented_filter(), tmp_path)
    assert found == ["127.0.0.1"] * len(lines), (found, lines)

