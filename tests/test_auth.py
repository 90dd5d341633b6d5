"""Digest authentication: RFC 2617 / RFC 7616 published examples, session reuse, the verifier."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from simplesip.core.auth import (
    Challenge,
    DigestCredentials,
    DigestSession,
    build_authorization,
    canonical_algorithm,
    digest_response,
)
from simplesip.core.auth_server import DigestVerifier, VerifyOutcome, VerifyResult
from simplesip.errors import AuthenticationError, SIPParseError
from tests.helpers.net import free_port
from tests.helpers.paths import DATA

# RFC 2617 section 3.5.
RFC2617_CHALLENGE = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                     'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                     'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
# RFC 7616 section 3.9.1 (password "Circle of Life", lower-case "of", per erratum 4495).
RFC7616_CHALLENGE = ('Digest realm="http-auth@example.org", qop="auth, auth-int", '
                     'algorithm={algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                     'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def params_of(header: str) -> dict[str, str]:
    """Raw ``name=value`` pieces of a header we built (no commas inside our test values)."""
    pairs = (part.split("=", 1) for part in header.removeprefix("Digest ").split(", "))
    return {name: value for name, value in pairs}


def test_rfc2617_section_3_5_example() -> None:
    challenge = Challenge.parse(RFC2617_CHALLENGE)
    assert challenge.qop == ("auth", "auth-int") and challenge.algorithm == "MD5"
    header = build_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life",
                                 cnonce="0a4f113b")
    fields = params_of(header)
    assert fields["response"] == '"6629fae49393a05397450978507c4ef1"'
    assert fields["qop"] == "auth" and fields["nc"] == "00000001" and fields["algorithm"] == "MD5"
    assert fields["opaque"] == '"5ccc069c403ebaf9f0171e9517f40e41"'
    assert fields["cnonce"] == '"0a4f113b"' and fields["uri"] == '"/dir/index.html"'


@pytest.mark.parametrize("algorithm, response", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_examples(algorithm: str, response: str) -> None:
    challenge = Challenge.parse(RFC7616_CHALLENGE.format(algorithm=algorithm))
    header = build_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life",
                                 cnonce=RFC7616_CNONCE)
    creds = DigestCredentials.parse(header)
    assert creds.response == response and creds.algorithm == algorithm
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", "00000001", RFC7616_CNONCE)
    assert f"algorithm={algorithm}," in header and "qop=auth," in header and "nc=00000001" in header


def test_rfc2069_style_challenge_without_qop() -> None:
    challenge = Challenge.parse('Digest realm="biloxi.com", nonce="abc"')
    header = build_authorization(challenge, "INVITE", "sip:bob@biloxi.com", "bob", "zanzibar")
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    expected = md5(f"{md5('bob:biloxi.com:zanzibar')}:abc:{md5('INVITE:sip:bob@biloxi.com')}")
    assert params_of(header)["response"] == f'"{expected}"'
    assert "nc=" not in header and "cnonce=" not in header and "qop=" not in header


def test_auth_int_used_only_when_alone_and_covers_body() -> None:
    only_int = Challenge.parse('Digest realm="r", nonce="n", qop="auth-int"')
    first = build_authorization(only_int, "INVITE", "sip:a@b", "u", "p", body=b"v=0", cnonce="c")
    second = build_authorization(only_int, "INVITE", "sip:a@b", "u", "p", body=b"v=1", cnonce="c")
    assert "qop=auth-int" in first and params_of(first)["response"] != params_of(second)["response"]
    both = Challenge.parse('Digest realm="r", nonce="n", qop="auth-int,auth"')
    assert "qop=auth," in build_authorization(both, "INVITE", "sip:a@b", "u", "p")


@pytest.mark.parametrize("value, expected", [
    ('digest   realm = "a" ,nonce="b",,  algorithm = md5-SESS , qop=auth, stale=TRUE',
     dict(realm="a", nonce="b", algorithm="MD5-sess", qop=("auth",), stale=True)),
    ('Digest realm="say \\"hi\\"", nonce="n", algorithm="SHA-256", qop="auth-int , auth"',
     dict(realm='say "hi"', algorithm="SHA-256", qop=("auth-int", "auth"), stale=False)),
    ('Digest\trealm="r",nonce="n",stale=false,opaque=""', dict(opaque="", stale=False)),
])
def test_challenge_parse_is_tolerant(value: str, expected: dict) -> None:
    challenge = Challenge.parse(value)
    for name, wanted in expected.items():
        assert getattr(challenge, name) == wanted


@pytest.mark.parametrize("value", [
    "", "   ", "Digest", '"Digest" realm="r"', 'Digest realm="r', "Digest realm",
    "=Digest realm=r", 'Digest realm="r"', 'Digest nonce="a", nonce="b", realm="r"',
    'Digest, realm="r", nonce="n" x', 'Digest realm="r" nonce="n" ;',
])
def test_challenge_parse_rejects_garbage(value: str) -> None:
    with pytest.raises(SIPParseError):
        Challenge.parse(value)


@pytest.mark.parametrize("value", [
    'Digest realm="r", nonce="n", algorithm=SHA-1',
    'Digest realm="r", nonce="n", qop="auth-conf"',
    'Basic realm="r"',
])
def test_unanswerable_challenge_raises_authentication_error(value: str) -> None:
    challenge = Challenge.parse(value)
    assert not challenge.supported
    with pytest.raises(AuthenticationError):
        build_authorization(challenge, "REGISTER", "sip:r", "u", "p")


def test_quoting_round_trips_awkward_username() -> None:
    challenge = Challenge.parse('Digest realm="r", nonce="n", qop="auth"')
    header = build_authorization(challenge, "REGISTER", "sip:r", 'a"b\\c', "p")
    assert DigestCredentials.parse(header).username == 'a"b\\c'


def test_session_counts_nc_per_nonce_and_detects_refused_password() -> None:
    session = DigestSession("alice", "secret")
    assert session.handle_challenge('Digest realm="r", nonce="n1", qop="auth"')
    counts = [params_of(session.authorize("REGISTER", "sip:r")[0][1])["nc"] for _ in range(3)]
    assert counts == ["00000001", "00000002", "00000003"]
    # Same realm challenged again after we sent credentials, not stale: the password is wrong.
    assert not session.handle_challenge('Digest realm="r", nonce="n2", qop="auth"',
                                        had_credentials=True)
    # Stale: retry with the new nonce, whose count starts again at 1.
    assert session.handle_challenge('Digest realm="r", nonce="n3", qop="auth", stale=true',
                                    had_credentials=True)
    ((name, value),) = session.authorize("REGISTER", "sip:r")
    assert name == "Authorization" and 'nonce="n3"' in value and "nc=00000001" in value


def test_session_answers_proxy_and_registrar_and_prefers_sha256() -> None:
    session = DigestSession("alice", "secret")
    assert session.handle_challenge(['Digest realm="reg", nonce="a", algorithm=MD5, qop="auth"',
                                     'Digest realm="reg", nonce="b", algorithm=SHA-256, qop="auth"'])
    assert session.handle_challenge('Digest realm="proxy", nonce="c"', proxy=True,
                                    had_credentials=True)
    headers = dict(session.authorize("INVITE", "sip:bob@reg"))
    assert "algorithm=SHA-256" in headers["Authorization"]
    assert 'realm="proxy"' in headers["Proxy-Authorization"]
    assert not session.handle_challenge('Digest realm="x", nonce="d", algorithm=SHA-1')

    fresh = DigestSession("alice", "secret")
    assert not fresh.handle_challenge('Digest realm="x"')
    assert fresh.handle_challenge(['Digest realm="y', 'Digest realm="y", nonce="e"'])
    ((name, value),) = fresh.authorize("INVITE", "sip:bob@y")
    assert name == "Authorization" and 'realm="y"' in value


USERS = {"alice": "secret", "bob": "hunter2"}


def answer(verifier: DigestVerifier, now: float, user: str = "alice", password: str = "secret",
           method: str = "REGISTER", uri: str = "sip:127.0.0.1", nc: int = 1, **kw) -> str:
    challenge = Challenge.parse(verifier.challenge(now))
    return build_authorization(challenge, method, uri, user, password, nc=nc, **kw)


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256"])
def test_verifier_round_trip(algorithm: str) -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get, algorithm=algorithm)
    challenge = Challenge.parse(verifier.challenge(1000.0))
    assert challenge.algorithm == algorithm and challenge.qop == ("auth",)
    result = verifier.verify(answer(verifier, 1000.0), "REGISTER", 1001.0, uri="sip:127.0.0.1")
    assert result.ok and result.username == "alice" and result.outcome is VerifyOutcome.OK


def test_verifier_refuses_wrong_password_user_method_uri_realm() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    assert verifier.verify(answer(verifier, 0, password="nope"), "REGISTER", 1).reason == \
        "wrong response"
    assert verifier.verify(answer(verifier, 0, user="mallory"), "REGISTER", 1).reason == \
        "unknown user"
    assert not verifier.verify(answer(verifier, 0), "INVITE", 1).ok
    assert not verifier.verify(answer(verifier, 0), "REGISTER", 1, uri="sip:other").ok
    other = DigestVerifier("elsewhere", USERS.get)
    assert verifier.verify(answer(other, 0), "REGISTER", 1).reason == "wrong realm"
    assert not verifier.verify("Basic YWxpY2U6c2VjcmV0", "REGISTER", 1).ok
    assert not verifier.verify('Digest username="alice", realm="127.0.0.1"', "REGISTER", 1).ok


def test_verifier_nc_replay() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    challenge = Challenge.parse(verifier.challenge(0))

    def send(nc: int) -> bool:
        header = build_authorization(challenge, "REGISTER", "sip:x", "alice", "secret", nc=nc)
        return verifier.verify(header, "REGISTER", 1).ok

    assert [send(1), send(1), send(2), send(5), send(3)] == [True, False, True, True, False]


def test_verifier_expiry_and_stale() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get, nonce_ttl=300)
    fresh = answer(verifier, 1000.0)
    assert verifier.verify(fresh, "REGISTER", 1300.0).ok
    late = verifier.verify(answer(verifier, 1000.0), "REGISTER", 1301.0)
    assert late.stale and late.outcome is VerifyOutcome.STALE and late.username == "alice"
    # Stale only for the right password: a wrong one on an old nonce is simply bad.
    assert verifier.verify(answer(verifier, 1000.0, password="x"), "REGISTER", 1301.0).outcome \
        is VerifyOutcome.BAD
    again = Challenge.parse(verifier.challenge(1301.0, stale=True))
    assert again.stale and again.nonce != Challenge.parse(verifier.challenge(1301.0)).nonce


def test_verifier_refuses_forged_and_foreign_nonces_and_downgrades() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get, secret=b"k" * 32)
    challenge = Challenge.parse(verifier.challenge(1000.0))
    stamp, salt, mac = challenge.nonce.split(".")
    forged = dataclasses.replace(challenge, nonce=f"{int(stamp, 16) + 600:x}.{salt}.{mac}")
    header = build_authorization(forged, "REGISTER", "sip:x", "alice", "secret")
    assert verifier.verify(header, "REGISTER", 1700.0).reason == "nonce not issued by us"
    future = DigestVerifier("127.0.0.1", USERS.get, secret=b"k" * 32)
    assert not verifier.verify(answer(future, 2000.0), "REGISTER", 1000.0).ok
    stranger = DigestVerifier("127.0.0.1", USERS.get)
    assert not verifier.verify(answer(stranger, 1000.0), "REGISTER", 1000.0).ok
    sibling = DigestVerifier("127.0.0.1", USERS.get, secret=b"k" * 32)
    assert verifier.verify(answer(sibling, 1000.0), "REGISTER", 1000.0).ok
    no_qop = dataclasses.replace(challenge, qop=())
    downgraded = build_authorization(no_qop, "REGISTER", "sip:x", "alice", "secret")
    assert not verifier.verify(downgraded, "REGISTER", 1000.0).ok
    sha = dataclasses.replace(challenge, algorithm="SHA-256")
    assert "algorithm" in verifier.verify(
        build_authorization(sha, "REGISTER", "sip:x", "alice", "secret"), "REGISTER", 1000.0).reason


def test_verifier_auth_int_checks_body() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    challenge = dataclasses.replace(Challenge.parse(verifier.challenge(0)), qop=("auth-int",))
    header = build_authorization(challenge, "INVITE", "sip:x", "bob", "hunter2", body=b"v=0\r\n")
    assert not verifier.verify(header, "INVITE", 1, body=b"v=1\r\n").ok
    assert verifier.verify(header, "INVITE", 1, body=b"v=0\r\n").ok


def test_verifier_forgets_expired_nonce_counts() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get, nonce_ttl=10)
    for start in range(0, 100, 5):
        assert verifier.verify(answer(verifier, start), "REGISTER", start).ok
    assert len(verifier._last_nc) <= 3  # only nonces still inside their ttl are remembered


@pytest.mark.parametrize("field, value", [
    ("nonce", "0.\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9.x"),
    ("nonce", "3e8.0123456789abcdef.\u00e9bcdef0123456789abcdef012345678"),
    ("nonce", "3e8.\udcff.00"),
    ("response", "\u00e9" * 32),
    ("response", "\udcff"),
    ("cnonce", "\udcff\ud800"),
    ("uri", "sip:\udcff@x"),
    ("algorithm", "\u017fha-256"),  # str.upper() makes "SHA-256" of the long s
])
def test_verifier_non_ascii_and_undecodable_fields_are_bad_not_exceptions(field: str, value: str) -> None:
    """Regression: hmac.compare_digest raised TypeError on a non-ASCII nonce or response, and the
    digest's UTF-8 encoding raised on undecodable bytes (the parser keeps them as surrogates)."""
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    params = params_of(answer(verifier, 1000.0))
    params[field] = '"' + value + '"'
    header = "Digest " + ", ".join(f"{name}={text}" for name, text in params.items())
    result = verifier.verify(header, "REGISTER", 1000.0)
    assert result.outcome is VerifyOutcome.BAD and result.reason


def test_verifier_never_raises_on_non_text() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    assert verifier.verify(None, "REGISTER", 0.0).outcome is VerifyOutcome.BAD  # type: ignore[arg-type]


def test_undecodable_bytes_are_hashed_as_sent() -> None:
    """A username that is not UTF-8 on the wire reaches us as surrogate escapes; the digest must
    cover the original bytes, so the verifier and a client agree and nothing raises."""
    raw_user = b"\xffalice".decode("utf-8", "surrogateescape")
    verifier = DigestVerifier("127.0.0.1", {raw_user: "secret"}.get)
    header = answer(verifier, 1000.0, user=raw_user)
    assert verifier.verify(header, "REGISTER", 1000.0).ok
    ha1 = hashlib.md5(b"\xffalice:127.0.0.1:secret").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:127.0.0.1").hexdigest()
    fields = params_of(header)
    expected = hashlib.md5(":".join([ha1, fields["nonce"].strip('"'), fields["nc"], fields["cnonce"].strip('"'),
                                     "auth", ha2]).encode()).hexdigest()
    assert fields["response"].strip('"') == expected


# --- against SIPp (a digest implementation we did not write) ----------------------------------

SIPP_TIMEOUT = 10


def header_of(message: bytes, name: str) -> str | None:
    for line in message.decode().split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def register(sock: socket.socket, sipp_port: int, cseq: int, authorization: str | None) -> bytes:
    """Send a REGISTER (re-sent until SIPp is up and answers) and return the response."""
    local_port = sock.getsockname()[1]
    lines = [f"REGISTER sip:127.0.0.1:{sipp_port} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-auth-{cseq}-{local_port}",
             "From: <sip:alice@127.0.0.1>;tag=t1", "To: <sip:alice@127.0.0.1>",
             f"Call-ID: auth-test-{local_port}@127.0.0.1", f"CSeq: {cseq} REGISTER",
             f"Contact: <sip:alice@127.0.0.1:{local_port}>", "Max-Forwards: 70", "Expires: 60"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    request = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    deadline = time.monotonic() + SIPP_TIMEOUT
    while time.monotonic() < deadline:
        sock.sendto(request, ("127.0.0.1", sipp_port))
        try:
            data, _ = sock.recvfrom(65535)
            return data
        except (TimeoutError, ConnectionRefusedError):
            continue
    raise AssertionError("SIPp never answered")


@pytest.mark.peer
@pytest.mark.timeout(15)
@pytest.mark.parametrize("password, status", [("secret", 200), ("wrong", 403)])
def test_our_client_against_sipp_registrar(tmp_path: Path, password: str, status: int) -> None:
    assert shutil.which("sipp"), "sipp is part of the test environment (sip-tester)"
    sipp_port = free_port()
    sipp = subprocess.Popen(
        ["sipp", "-sf", str(DATA / "peers" / "registrar_auth.xml"), "-i", "127.0.0.1",
         "-p", str(sipp_port), "-m", "1", "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.3)
            first = register(sock, sipp_port, 1, None)
            assert first.startswith(b"SIP/2.0 401")
            challenge = Challenge.parse(header_of(first, "WWW-Authenticate"))
            authorization = build_authorization(challenge, "REGISTER", f"sip:127.0.0.1:{sipp_port}",
                                                "alice", password)
            second = register(sock, sipp_port, 2, authorization)
            assert second.startswith(f"SIP/2.0 {status}".encode())
        sipp.wait(SIPP_TIMEOUT)
    finally:
        sipp.kill()
        sipp.wait()


def serve_registrar(sock: socket.socket, verifier: DigestVerifier, outcomes: list[str]) -> None:
    """A two-request registrar: challenge, then verify (the REGISTER's Request-URI as uri)."""
    while len(outcomes) < 2:
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        except OSError:
            return
        request_uri = data.split(b" ", 2)[1].decode()
        authorization = header_of(data, "Authorization")
        if authorization is None:
            status, extra = "401 Unauthorized", f"WWW-Authenticate: {verifier.challenge(time.time())}"
            outcomes.append("challenged")
        else:
            result = verifier.verify(authorization, "REGISTER", time.time(), uri=request_uri)
            status, extra = ("200 OK", "Expires: 60") if result.ok else ("403 Forbidden", "X-N: 1")
            outcomes.append(f"{result.outcome.value}:{result.username}:{result.reason}")
        copied = [f"{name}: {header_of(data, name)}" for name in ("Via", "From", "To", "Call-ID", "CSeq")]
        copied[2] += ";tag=reg1"
        response = "\r\n".join([f"SIP/2.0 {status}", *copied, extra, "Content-Length: 0", "", ""])
        sock.sendto(response.encode(), addr)


@pytest.mark.peer
@pytest.mark.timeout(15)
def test_sipp_client_against_our_verifier(tmp_path: Path) -> None:
    verifier = DigestVerifier("127.0.0.1", {"alice": "secret"}.get)
    outcomes: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.settimeout(0.2)
        server = threading.Thread(target=serve_registrar, args=(sock, verifier, outcomes))
        server.start()
        try:
            sipp = subprocess.run(
                ["sipp", "-sf", str(DATA / "peers" / "reg_client.xml"),
                 f"127.0.0.1:{sock.getsockname()[1]}", "-i", "127.0.0.1", "-p", str(free_port()),
                 "-s", "alice", "-au", "alice", "-ap", "secret", "-m", "1", "-nostdin",
                 "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error"],
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=SIPP_TIMEOUT + 2)
        finally:
            outcomes += ["stop", "stop"]  # ends the server loop if SIPp gave up early
            server.join()
    assert outcomes[:2] == ["challenged", "ok:alice:"]
    assert sipp.returncode == 0


# --- -sess algorithms, nonce counts past 9, qop without cnonce --------------------------------

# Neither RFC 2617 nor RFC 7616 prints a -sess response, so these are the published examples'
# inputs (RFC 2617 §3.5, RFC 7616 §3.9.1) run through the -sess A1 of RFC 2617 §3.2.2.2 /
# RFC 7616 §3.4.2: A1 = H(username:realm:password):nonce:cnonce. Computed independently with
# hashlib below, and pinned.
def _sess_response(hash_name: str, realm: str, password: str, nonce: str, cnonce: str) -> str:
    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    ha1 = h(f"{h(f'Mufasa:{realm}:{password}')}:{nonce}:{cnonce}")
    return h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{h('GET:/dir/index.html')}")


@pytest.mark.parametrize("algorithm, hash_name, response", [
    ("MD5-sess", "md5", "e783283f46242139c486a698fec7211d"),
    ("SHA-256-sess", "sha256", "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7"),
])
def test_sess_algorithms_on_the_rfc7616_example(algorithm: str, hash_name: str, response: str) -> None:
    challenge = Challenge.parse(RFC7616_CHALLENGE.format(algorithm=algorithm))
    assert challenge.algorithm == algorithm and challenge.supported
    header = build_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life",
                                 cnonce=RFC7616_CNONCE)
    creds = DigestCredentials.parse(header)
    assert creds.algorithm == algorithm and creds.cnonce == RFC7616_CNONCE
    assert creds.response == response == _sess_response(
        hash_name, "http-auth@example.org", "Circle of Life", challenge.nonce, RFC7616_CNONCE)


def test_md5_sess_on_the_rfc2617_example() -> None:
    challenge = dataclasses.replace(Challenge.parse(RFC2617_CHALLENGE), algorithm="MD5-sess")
    header = build_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life",
                                 cnonce="0a4f113b")
    assert DigestCredentials.parse(header).response == "8e3825c57e897f5a0dec6c2d4e5059d0" == \
        _sess_response("md5", "testrealm@host.com", "Circle Of Life", challenge.nonce, "0a4f113b")
    # The session key binds the cnonce: the same answer with another cnonce is another digest.
    other = build_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life",
                                cnonce="0a4f113c")
    assert DigestCredentials.parse(other).response != "8e3825c57e897f5a0dec6c2d4e5059d0"


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_verifier_sess_checks_the_cnonce_in_the_session_key(algorithm: str) -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get, algorithm=algorithm)
    header = answer(verifier, 0, cnonce="abc")
    assert verifier.verify(header, "REGISTER", 1).ok
    # A cnonce swapped after the digest was computed no longer matches.
    swapped = header.replace('cnonce="abc"', 'cnonce="abd"')
    assert verifier.verify(swapped.replace("nc=00000001", "nc=00000002"), "REGISTER", 1).reason == \
        "wrong response"


def test_nonce_count_is_hex_past_nine() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    session = DigestSession("alice", "secret")
    assert session.handle_challenge(verifier.challenge(0))
    headers = [session.authorize("REGISTER", "sip:127.0.0.1")[0][1] for _ in range(17)]
    counts = [DigestCredentials.parse(h).nc for h in headers]
    assert counts[8:11] == ["00000009", "0000000a", "0000000b"] and counts[16] == "00000011"
    assert all(verifier.verify(h, "REGISTER", 1).ok for h in headers)
    # Read as hex, not decimal: after "00000010" (16), "0000000a" (10) is a replay.
    challenge = Challenge.parse(verifier.challenge(0))

    def send(nc: int) -> bool:
        return verifier.verify(build_authorization(challenge, "REGISTER", "sip:x", "alice", "secret", nc=nc),
                               "REGISTER", 1).ok

    assert [send(9), send(16), send(10), send(17)] == [True, True, False, True]


def test_qop_without_cnonce_is_refused() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    challenge = Challenge.parse(verifier.challenge(0))
    # A digest computed honestly with an empty cnonce, sent without the cnonce parameter.
    response = digest_response("MD5", "alice", "127.0.0.1", "secret", "REGISTER", "sip:x",
                               challenge.nonce, "00000001", "", "auth")
    header = (f'Digest username="alice", realm="127.0.0.1", nonce="{challenge.nonce}", uri="sip:x", '
              f'response="{response}", algorithm=MD5, qop=auth, nc=00000001')
    result = verifier.verify(header, "REGISTER", 1)
    assert not result.ok and result.reason == "qop, nc or cnonce missing or malformed"
    assert not verifier.verify(header.replace("nc=00000001", 'nc=00000001, cnonce=""'), "REGISTER", 1).ok
    # The client never sends qop without a cnonce.
    assert DigestCredentials.parse(build_authorization(challenge, "REGISTER", "sip:x", "alice", "secret")).cnonce


# --- parsing edge cases, defaults and the client session's choices ----------------------------


def test_canonical_algorithm_names() -> None:
    assert [canonical_algorithm(n) for n in ("md5", "MD5", "sha-256", "Sha-512-256", "md5-SESS", "sha-256-Sess")] \
        == ["MD5", "MD5", "SHA-256", "SHA-512-256", "MD5-sess", "SHA-256-sess"]
    assert [canonical_algorithm(n) for n in ("foo", "foo-sess", "AKAv1-MD5")] == ["foo", "foo-sess", "AKAv1-MD5"]


@pytest.mark.parametrize("value, realm, nonce", [
    ('Digest realm = "a\\"b" ,, nonce= n1 ', 'a"b', "n1"),
    ('Digest   realm="a\\\\b",nonce="x y"', "a\\b", "x y"),
    ('Digest nonce="", realm=""', "", ""),
])
def test_challenge_quoting_and_spacing(value: str, realm: str, nonce: str) -> None:
    challenge = Challenge.parse(value)
    assert (challenge.realm, challenge.nonce) == (realm, nonce)


@pytest.mark.parametrize("value, reason", [
    ("Digest realm", "auth parameter 'realm' has no value"),
    ("Digest realm   ", "auth parameter 'realm' has no value"),
    ('Digest realm="abc', "unterminated quoted string"),
    ('Digest realm="ab\\', "unterminated quoted string"),
    ('Digest realm="ab\\"', "unterminated quoted string"),
    ('Digest realm="a", nonce="n", realm="b"', "auth parameter 'realm' repeated"),
    ("Digest =x", "bad auth parameter at '=x'"),
    ("Digest realm=a, @@@", "bad auth parameter at '@@@'"),
    ("Digest realm=\"a\", nonce=n, " + "@" * 30, "bad auth parameter at '" + "@" * 20 + "'"),
    (",Digest", "no auth scheme in ',Digest'"),
    ('Digest realm="r"', "digest challenge without realm or nonce"),
])
def test_challenge_parse_errors_say_what_is_wrong(value: str, reason: str) -> None:
    with pytest.raises(SIPParseError) as caught:
        Challenge.parse(value)
    assert reason in str(caught.value)


def test_other_schemes_parse_with_empty_defaults() -> None:
    challenge = Challenge.parse("Newauth foo=bar")
    assert (challenge.scheme, challenge.realm, challenge.nonce, challenge.algorithm) == ("Newauth", "", "", "MD5")
    assert challenge.params == {"foo": "bar"} and not challenge.stale and not challenge.supported


def test_credentials_defaults_and_errors() -> None:
    creds = DigestCredentials.parse('Digest username="u", realm="r", nonce="n", uri="sip:x", response="0"')
    assert (creds.algorithm, creds.qop, creds.nc, creds.cnonce, creds.opaque) == ("MD5", "", "", "", None)
    creds = DigestCredentials.parse('Digest username="u", realm="r", nonce="n", uri="sip:x", response="0", '
                                    'opaque="op", qop=AUTH, algorithm=sha-256')
    assert (creds.opaque, creds.qop, creds.algorithm) == ("op", "auth", "SHA-256")
    with pytest.raises(SIPParseError, match="authorization without nonce, response"):
        DigestCredentials.parse('Digest username="u", realm="r", uri="sip:x"')
    with pytest.raises(SIPParseError, match="unsupported auth scheme 'Basic'"):
        DigestCredentials.parse("Basic YWxpY2U6c2VjcmV0")


def test_answers_without_qop_follow_rfc2069() -> None:
    challenge = Challenge.parse('Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"')
    header = build_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life")
    assert header.startswith("Digest username=")
    creds = DigestCredentials.parse(header)

    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    expected = h(f"{h('Mufasa:testrealm@host.com:Circle Of Life')}:{challenge.nonce}:{h('GET:/dir/index.html')}")
    assert creds.response == expected and (creds.qop, creds.nc, creds.cnonce) == ("", "", "")
    assert digest_response("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET",
                           "/dir/index.html", challenge.nonce) == expected
    # -sess without qop still needs a client nonce: one is made up and sent.
    sess = dataclasses.replace(challenge, algorithm="MD5-sess")
    creds = DigestCredentials.parse(build_authorization(sess, "GET", "/", "Mufasa", "x"))
    assert creds.cnonce and creds.nc == "" and creds.qop == ""
    with pytest.raises(AuthenticationError, match="cannot answer Basic challenge with algorithm MD5 and qop -"):
        build_authorization(Challenge.parse('Basic realm="r"'), "GET", "/", "u", "p")


def test_auth_int_without_a_body_covers_the_empty_body() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    challenge = dataclasses.replace(Challenge.parse(verifier.challenge(0)), qop=("auth-int",))
    header = build_authorization(challenge, "BYE", "sip:x", "alice", "secret", cnonce="c")
    assert header == build_authorization(challenge, "BYE", "sip:x", "alice", "secret", body=b"", cnonce="c")
    session = DigestSession("alice", "secret")
    session._challenges[("Authorization", "127.0.0.1")] = challenge
    [(_, value)] = session.authorize("BYE", "sip:x")
    assert verifier.verify(value, "BYE", 1, body=b"").ok


def test_session_chooses_per_realm_and_skips_bad_challenges() -> None:
    session = DigestSession("alice", "secret")
    offered = ['Digest realm="a", nonce="1", algorithm=MD5',
               "Digest realm=",  # malformed, skipped, the rest still counts
               'Digest realm="a", nonce="2", algorithm=SHA-256-sess',
               'Digest realm="a", nonce="3", algorithm=SHA-256',  # as strong: the first offered stays
               'Digest realm="b", nonce="4", algorithm=MD5']
    assert session.handle_challenge(offered) is True
    headers = dict((DigestCredentials.parse(v).realm, DigestCredentials.parse(v)) for _, v in
                   session.authorize("REGISTER", "sip:x"))
    assert {realm: (c.nonce, c.algorithm) for realm, c in headers.items()} == {
        "a": ("2", "SHA-256-sess"), "b": ("4", "MD5")}
    # Challenged again without stale: the caller says whether credentials were sent (default: no).
    assert session.handle_challenge('Digest realm="a", nonce="5"') is True
    assert session.handle_challenge('Digest realm="a", nonce="6"', had_credentials=True) is False


def test_session_skips_unsupported_challenges_and_signs_the_body_it_is_given() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    session = DigestSession("alice", "secret")
    good = verifier.challenge(0).replace('qop="auth"', 'qop="auth-int"')
    assert session.handle_challenge(['Digest realm="127.0.0.1", nonce="x", algorithm=AKAv1-MD5', good])
    [(_, value)] = session.authorize("INVITE", "sip:x", body=b"v=0\r\n")
    assert verifier.verify(value, "INVITE", 1, body=b"v=0\r\n").ok


def test_verifier_reasons_and_users_in_its_verdicts() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    assert verifier.verify(None, "REGISTER", 1) == VerifyResult(VerifyOutcome.BAD, None, "authorization is not text")  # type: ignore[arg-type]
    garbage = verifier.verify("Digest realm", "REGISTER", 1)
    assert garbage.outcome is VerifyOutcome.BAD and garbage.username is None
    assert garbage.reason == "auth parameter 'realm' has no value"
    wrong = verifier.verify(answer(verifier, 0, password="nope"), "REGISTER", 1)
    assert (wrong.outcome, wrong.username, wrong.reason) == (VerifyOutcome.BAD, "alice", "wrong response")
    assert verifier.verify(answer(verifier, 0), "REGISTER", 1, uri="sip:other").reason == \
        "digest uri does not match the request"
    not_hex = answer(verifier, 0).replace('response="', 'response="zz')
    assert verifier.verify(not_hex, "REGISTER", 1).reason == "response is not a hex digest"
    header = answer(verifier, 1000.0)
    assert verifier.verify(header, "REGISTER", 1000.0).ok
    assert verifier.verify(header, "REGISTER", 1000.0).reason == "nonce count replayed"
    stale = verifier.verify(answer(verifier, 0), "REGISTER", 301)
    assert (stale.outcome, stale.username, stale.reason) == (VerifyOutcome.STALE, "alice", "nonce expired")
    with pytest.raises(ValueError, match="unsupported algorithm 'SHA-1'"):
        DigestVerifier("r", USERS.get, algorithm="SHA-1")


def test_verifier_default_ttl_and_clock_skew() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    assert verifier.verify(answer(verifier, 1000.0), "REGISTER", 1300.0).ok  # 300 s: still fresh
    assert verifier.verify(answer(verifier, 1000.0), "REGISTER", 1301.0).stale
    # A nonce up to 5 s "from the future" (a sibling's clock ahead) is ours; beyond, it is not.
    assert verifier.verify(answer(verifier, 1005.0), "REGISTER", 1000.0).ok
    assert verifier.verify(answer(verifier, 1006.0), "REGISTER", 1000.0).reason == "nonce not issued by us"


def test_verifier_refuses_a_malformed_nonce_count() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    for nc in ("1", "0000000g", "000000001"):
        header = answer(verifier, 0).replace("nc=00000001", f"nc={nc}")
        assert verifier.verify(header, "REGISTER", 1).reason == "qop, nc or cnonce missing or malformed"


def test_verifier_remembers_counts_for_the_whole_ttl_at_real_clock_values() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get, nonce_ttl=300)
    now = 1_765_000_000.0
    first = answer(verifier, now)
    assert verifier.verify(first, "REGISTER", now).ok
    assert verifier.verify(answer(verifier, now + 100), "REGISTER", now + 300).ok  # prunes what expired
    assert verifier.verify(first, "REGISTER", now + 300).reason == "nonce count replayed"  # age 300: kept


def test_challenge_stale_flag_only_when_asked() -> None:
    verifier = DigestVerifier("r", USERS.get)
    assert "stale" not in verifier.challenge(0)
    assert verifier.challenge(0, stale=True).endswith(', qop="auth", stale=true')


def test_verifier_auth_int_without_a_body_checks_the_empty_body() -> None:
    verifier = DigestVerifier("127.0.0.1", USERS.get)
    challenge = dataclasses.replace(Challenge.parse(verifier.challenge(0)), qop=("auth-int",))
    header = build_authorization(challenge, "BYE", "sip:x", "bob", "hunter2")
    assert verifier.verify(header, "BYE", 1).ok
