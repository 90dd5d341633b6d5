"""What the engine reads from, and builds for, simplesip: the INVITE's headers and source
address, a call's RTP statistics, a rejection's headers, and the ``Endpoint`` for a
configuration. Kept apart from the engine so that the engine deals in ``CallContext`` only."""

from __future__ import annotations

import logging
from typing import Any

from ivr.call import CallContext
from ivr.config import IvrConfig

log = logging.getLogger(__name__)

#: simplesip end reasons (simplesip.core.events.END_REASONS) -> ivr_call_ended reasons.
SIP_END_REASONS = {"remote_bye": "remote_hangup", "local_bye": "local_hangup", "rejected": "rejected",
                   "cancelled": "cancelled", "timeout": "error", "no_ack": "error", "error": "error",
                   "session_expired": "error"}


def rtp_stats(call: CallContext) -> dict[str, Any]:
    """The simplesip call's RTP statistics (loss, jitter), or {} without media."""
    sip_call = getattr(call.controller, "sip_call", None)
    try:
        return dict(sip_call.stats()) if sip_call is not None and hasattr(sip_call, "stats") else {}
    except Exception:  # statistics are best effort at call end
        return {}


def headers_dict(headers: Any) -> dict[str, str]:
    """The INVITE's headers as a plain dict (first value of each name)."""
    if not headers:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers
    result: dict[str, str] = {}
    for name, value in items:
        result.setdefault(name, value)
    return result


def via_source(headers: dict[str, str]) -> tuple[str, int] | None:
    """Where the INVITE came from per its top Via (``received``/``rport`` when present); used
    only while simplesip does not give the INVITE's transport source address."""
    from simplesip.errors import SIPParseError
    from simplesip.wire.uri import Via

    value = next((v for k, v in headers.items() if k.lower() == "via"), None)
    try:
        via = Via.parse(value.split(",")[0]) if value else None
    except SIPParseError:
        return None
    if via is None:
        return None
    rport = via.params.get("rport")
    port = int(rport) if rport and str(rport).isdigit() else via.port or 5060
    return str(via.params.get("received") or via.host), port


def policy_headers(admission: Any, status: int, call: CallContext | None = None) -> dict[str, str]:
    """Headers the server's policy adds to a rejection (Retry-After, WWW-Authenticate)."""
    headers_for = getattr(admission, "reject_headers", None)
    if headers_for is not None:
        return headers_for(status, call=call)
    return {"Retry-After": "5"} if status == 503 else {}


async def policy_hold(admission: Any, call: CallContext) -> None:
    """Wait as long as the server's policy holds back ``call``'s rejection (a failed password
    answered later and later, :meth:`ivr.admission.Admission.hold`); at once otherwise."""
    hold = getattr(admission, "hold", None)
    if hold is not None:
        await hold(call)


def make_endpoint(config: IvrConfig) -> Any:
    """The real simplesip endpoint for ``config`` (imported late: tests may not need it)."""
    from simplesip.aio.endpoint import Endpoint
    from simplesip.aio.endpoint_config import EndpointConfig

    options: dict[str, Any] = dict(
        local_host=config.listen_host, advertised_host=config.advertise, sip_port=config.listen_port,
        transports=tuple(config.transports), rtp_port_range=tuple(config.rtp_ports),
        tcp_idle_timeout=config.tcp_idle_timeout, tcp_message_timeout=config.tcp_message_timeout,
        **config.sip,
        **config.tls,  # listen.tls: (SIP over TLS)
        srtp=config.srtp, srtp_suites=tuple(config.srtp_suites),
    )
    if config.accounts:
        account = config.accounts[0]
        options.update(username=account.username, password=account.password, server=account.server,
                       server_port=account.port, transport=account.transport)
    return Endpoint(EndpointConfig(**options))
