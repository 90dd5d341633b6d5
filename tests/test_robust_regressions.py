"""Regressions for what the atheris harnesses in fuzz/ found (docs/security.md lists them)."""

from __future__ import annotations

import pytest

from simplesip.errors import SIPParseError
from simplesip.wire.sdp import SessionDescription

# fuzz/fuzz_sdp.py, crash-92dead0a: a second v= line and a garbage c= line were accepted, and
# serialize() moved the unknown lines around, so parse(serialize(x)) != x.
SECOND_VERSION_LINE = (b"v=0\r\no=- 3776517403491968710 1 IN IP4 127.0.0.1\r\ns=slesiv=0\r\nv=0v=0\r\n"
                       b"z=777o\x01\x00\x00\x00\x00\x00\x00\x0019p\r\nc=IvN IP4 \x00\x007.0=.0.1\r\n")


def test_sdp_fuzz_crash_is_refused_or_round_trips() -> None:
    try:
        parsed = SessionDescription.parse(SECOND_VERSION_LINE)
    except SIPParseError:
        return
    assert SessionDescription.parse(parsed.serialize()) == parsed


@pytest.mark.parametrize("line", [b"v=0", b"v=1"])
def test_sdp_second_version_line_is_refused(line: bytes) -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n" + line + b"\r\nt=0 0\r\n"
    with pytest.raises(SIPParseError):
        SessionDescription.parse(body)
