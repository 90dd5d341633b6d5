"""The settings of an :class:`~simplesip.aio.endpoint.Endpoint` (also importable from there)."""

from __future__ import annotations

from dataclasses import dataclass

from simplesip.core.srtp import SRTP_SUITES, check_policy, check_suites

__all__ = ["EndpointConfig"]


@dataclass
class EndpointConfig:
    """Everything an Endpoint needs. Registration fields are optional: without ``server`` the
    Endpoint only makes and takes direct calls."""

    local_host: str = "127.0.0.1"
    sip_port: int = 5060  # 0: any free port (see Endpoint.local_address)
    transports: tuple[str, ...] = ("udp", "tcp")
    username: str | None = None
    password: str | None = None
    server: str | None = None
    server_port: int = 5060
    transport: str = "udp"  # towards the server, and the default for outgoing calls
    domain: str | None = None
    #: A SIP URI or host[:port]: every out-of-dialog request goes there (a Route header), whatever
    #: its target. Without one, only targets in our domain on the server's port go to ``server``.
    outbound_proxy: str | None = None
    display_name: str | None = None
    rtp_port_range: tuple[int, int] = (20000, 30000)
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    dtmf_payload_type: int = 101
    user_agent: str = "SimpleSIP/0.2"
    register_expires: int = 3600
    register_timeout: float = 8.0  # seconds before register() gives up with ConnectionError
    call_timeout: float = 60.0  # seconds call() waits for an answer (then CANCEL, CallError 408)
    tcp_idle_timeout: float = 64.0  # close a TCP connection that carried nothing for this long
    tcp_message_timeout: float = 10.0  # close one whose message started and is still incomplete
    jitter_target_ms: int = 60
    #: SRTP (RFC 3711, SDES keys in the SDP): "off", "optional" (offer RTP/AVP with crypto lines,
    #: take SRTP whenever the peer does) or "mandatory" (offer RTP/SAVP; an INVITE without an
    #: acceptable crypto line gets 488). Incoming calls use it; ``Endpoint.call(srtp=...)``
    #: overrides it per outbound call. SDES keys travel in the SDP: use it with SIP over TLS.
    srtp: str = "off"
    #: The SDES suites offered and accepted, our preference first.
    srtp_suites: tuple[str, ...] = SRTP_SUITES

    def __post_init__(self) -> None:
        check_policy(self.srtp)
        self.srtp_suites = check_suites(self.srtp_suites)
