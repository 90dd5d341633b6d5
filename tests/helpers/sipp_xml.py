"""Pieces of SIPp scenario XML for the peer tests, so each scenario states only what is special.

SIPp fills the ``[keyword]`` fields when it sends; ``[len]`` is the body length. Every function
returns the text the scenario would otherwise spell out by hand, byte for byte.
"""

from __future__ import annotations

#: The To tag SIPp's own UAS scenarios put on their responses.
UAS_TO_TAG = ";tag=[pid]SIPpTag01[call_number]"
#: Media SIPp offers or answers by default: PCMU only.
PCMU = "m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
#: The SIPp UAC's From, with the tag's scenario number (00 for SIPp's own uac) filled in.
UAC_FROM = "From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag{tag}[call_number]"
#: The Contact of SIPp's UAS answers.
UAS_CONTACT = "Contact: <sip:[local_ip]:[local_port];transport=[transport]>"
UAC_VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"


def scenario(name: str, *steps: str) -> str:
    """A whole scenario file from its steps (``<send>``, ``<recv>``, ``<pause>`` ... elements)."""
    return ('<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
            f'<scenario name="{name}">\n{"".join(steps)}</scenario>\n')


def send(message: str, *, retrans: bool = False) -> str:
    """A ``<send>`` of ``message``; with ``retrans`` SIPp repeats it every 500 ms until answered."""
    attribute = ' retrans="500"' if retrans else ""
    return f"  <send{attribute}><![CDATA[\n{message}]]></send>\n"


def sdp(media: str = PCMU, *, version: int = 1, connection: str = "[media_ip]") -> str:
    """SIPp's session description around ``media`` (the m= line and its attributes)."""
    return f"v=0\no=sipp 1 {version} IN IP4 [local_ip]\ns=-\nc=IN IP4 {connection}\nt=0 0\n{media}"


def _with_body(lines: list[str], body: str | None, content_type: str) -> str:
    if body is None:
        return "\n".join([*lines, "Content-Length: 0", ""])
    return "\n".join([*lines, f"Content-Type: {content_type}", "Content-Length: [len]", "", body])


def response(status: str, *, to_tag: bool = False, cseq: str = "[last_CSeq:]",
             headers: tuple[str, ...] = (), body: str | None = None,
             content_type: str = "application/sdp") -> str:
    """A response to the last request received, echoing its Via, From, To, Call-ID and CSeq."""
    lines = [f"SIP/2.0 {status}", "[last_Via:]", "[last_From:]",
             "[last_To:]" + (UAS_TO_TAG if to_tag else ""), "[last_Call-ID:]", cseq, *headers]
    return _with_body(lines, body, content_type)


def uac_request(request_line: str, cseq: str, *, to: str, tag: str = "00",
                headers: tuple[str, ...] = ("Max-Forwards: 70",), body: str | None = None,
                content_type: str = "application/sdp") -> str:
    """A request from a SIPp UAC: ``to`` is the whole To value (with ``[peer_tag_param]`` in a
    dialog), ``headers`` what follows CSeq."""
    lines = [request_line, UAC_VIA, UAC_FROM.format(tag=tag), f"To: {to}", "Call-ID: [call_id]",
             f"CSeq: {cseq}", *headers]
    return _with_body(lines, body, content_type)
