"""atheris harness: SIP messages (``parse_message``), TCP framing and the header-level parsers.

Contract under test: any datagram either parses or raises :class:`SIPParseError`; anything that
parses serialises to bytes that parse again to the same start line. TCP framing raises only
ValueError (the connection is closed).

    python fuzz/fuzz_sip.py -runs=300000 -max_len=4096 fuzz/corpus/sip
"""

from __future__ import annotations

import atheris

import _common

with atheris.instrument_imports():
    from simplesip.errors import SIPParseError
    from simplesip.wire.message import Request, parse_message
    from simplesip.wire.framing import StreamFramer
    from simplesip.aio.transport import frame_stream
    from simplesip.wire.uri import NameAddr, SipURI, Via, parse_cseq


def test_one_input(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SIPParseError:
        message = None
    if message is not None:
        # Header accessors are lazy in places: touch the ones the UA core reads first.
        for access in (lambda: message.call_id, lambda: message.cseq, lambda: message.vias,
                       lambda: message.from_, lambda: message.to):
            try:
                access()
            except SIPParseError:
                pass
        again = parse_message(message.serialize())
        if isinstance(message, Request):
            assert isinstance(again, Request) and again.method == message.method
        else:
            assert again.status == message.status  # type: ignore[union-attr]
    try:
        frame_stream(bytearray(data))
    except ValueError:
        pass
    try:
        StreamFramer().feed(data)
    except (SIPParseError, ValueError):
        pass
    text = data.decode("utf-8", "replace")
    for parse in (SipURI.parse, NameAddr.parse, Via.parse, parse_cseq):
        try:
            parse(text)
        except SIPParseError:
            pass


if __name__ == "__main__":
    _common.main(test_one_input)
