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
    #: The address written in Via, Contact and SDP. None: ``local_host``, or when that is a
    #: wildcard (0.0.0.0, ::) the address the default route leaves from. Set it to a public
    #: address when a static NAT is in front (a registrar's rport/received still overrides it).
    advertised_host: str | None = None
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
    #: RFC 3263: find servers named by domain through NAPTR and SRV records (priority, weight,
    #: failover to the next on timeout, ICMP error or 503). False: a name is only looked up as a
    #: host (A record), on the port given (``server_port``, or the URI's, else 5060).
    dns_srv: bool = True
    #: DNS servers to ask ("192.0.2.53" or "127.0.0.1:5353"); None: the system's (resolv.conf).
    dns_nameservers: tuple[str, ...] | None = None
    dns_timeout: float = 3.0  # seconds one lookup may take
    failover_timeout: float = 4.0  # a target silent this long is left for the next one
    #: Session timers (RFC 4028): the interval asked for and granted, in seconds; 0 turns them
    #: off. Whoever refreshes sends a re-INVITE or UPDATE every half interval; a call whose peer
    #: should refresh and does not is ended with BYE (end reason ``session_expired``).
    session_expires: int = 1800
    min_se: int = 90  # the shortest interval accepted (shorter requests get 422); RFC: >= 90
    #: RFC 3262: PRACK a peer's reliable 18x; ring reliably (RSeq, retransmitted until PRACK,
    #: the 200 after it) when the caller sends ``Require: 100rel``. False: a caller requiring
    #: 100rel gets 420.
    reliable_provisionals: bool = True
    max_redirects: int = 5  # 3xx to our INVITEs: new targets tried in all (0: a 3xx is final)
    #: While registered, a CRLF keep-alive to the registrar every this many seconds (RFC 5626:
    #: holds a NAT binding or the TCP connection open; over TCP the registrar answers a CRLF,
    #: counted in ``Endpoint.keepalive_pongs``). 0: none.
    keepalive_interval: float = 30.0

    # --- SIP over TLS (RFC 3261 26, RFC 5630); on with "tls" in ``transports`` ---------------
    #: The TLS listener's port (0: any free one, see Endpoint.tls_port). The listener opens only
    #: with ``tls_cert_file``; without one, TLS is used for outbound connections alone.
    tls_port: int = 5061
    tls_cert_file: str | None = None  # our certificate (chain), PEM
    tls_key_file: str | None = None  # its private key (None: inside tls_cert_file)
    #: CAs that vouch for servers we connect to (PEM); None: the system's store.
    tls_ca_file: str | None = None
    #: Verify the server's certificate and host name (the target's name, or its IP for an IP
    #: literal). False accepts any certificate: for a lab, never towards a carrier.
    tls_verify: bool = True
    #: Our client certificate and key, for servers that require mutual TLS (trunks).
    tls_client_cert_file: str | None = None
    tls_client_key_file: str | None = None
    #: Require a certificate from every TLS client, signed by one of these CAs (mutual TLS).
    tls_client_ca_file: str | None = None
    tls_handshake_timeout: float = 10.0  # seconds a TLS handshake may take, either way

    # --- SRTP (RFC 3711) with SDES keys (RFC 4568) ----------------------------------------------
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
