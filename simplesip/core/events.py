"""Events that :class:`simplesip.core.useragent.UserAgentCore` hands to its owner.

Every event is a small frozen dataclass. Call events carry the Call-ID, which is how the user agent
names a call everywhere. Events are produced in the order things happened and read one at a time
with ``UserAgentCore.next_event()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # imported only for annotations: events never need the parser at runtime
    from simplesip.wire.message import Request

__all__ = [
    "END_REASONS",
    "CallAnswered",
    "CallConfirmed",
    "CallEnded",
    "CallProgress",
    "CallRedirected",
    "Event",
    "IncomingCall",
    "InfoReceived",
    "MessageRejected",
    "ReferProgress",
    "ReofferAnswered",
    "RegistrationFailed",
    "RegistrationSucceeded",
    "RemoteOfferReceived",
]

#: Why a call ended (``CallEnded.reason``):
#: ``local_bye``/``remote_bye`` a confirmed call was hung up by us / by the peer;
#: ``rejected`` the INVITE got (or we sent) a final 3xx-6xx; ``cancelled`` the INVITE was cancelled
#: (by us or by the peer) before an answer; ``timeout`` no final response (Timer B, status 408);
#: ``no_ack`` we answered but the ACK never came (RFC 3261 13.3.1.4, we sent BYE);
#: ``error`` a transport or protocol failure inside an established call (e.g. our BYE timed out).
END_REASONS = frozenset(
    {"local_bye", "remote_bye", "rejected", "cancelled", "timeout", "no_ack", "error",
     "session_expired"}
)


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE arrived (100 Trying, and 180 Ringing if ``auto_ringing``, were already sent).

    ``source`` is the address the INVITE came from (the UDP source or the TCP peer), which the
    Via cannot be trusted to tell.
    """

    call_id: str
    request: "Request"
    remote_sdp: bytes | None
    source: tuple[str, int] | None = None


@dataclass(frozen=True)
class CallProgress:
    """A provisional response (101-199) to our INVITE; ``remote_sdp`` for early media (183)."""

    call_id: str
    status: int
    reason: str
    remote_sdp: bytes | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 199:
            raise ValueError(f"CallProgress needs a 1xx status, got {self.status}")


@dataclass(frozen=True)
class CallRedirected:
    """A 3xx sent our INVITE elsewhere: locate ``uri`` (DNS) and call
    ``UserAgentCore.follow_redirect(call_id, targets, now)``; the call goes on meanwhile."""

    call_id: str
    uri: str


@dataclass(frozen=True)
class CallAnswered:
    """Our INVITE got a 2xx; the ACK has been sent."""

    call_id: str
    remote_sdp: bytes | None


@dataclass(frozen=True)
class CallConfirmed:
    """The ACK for our 2xx arrived: the incoming call is fully established.

    ``remote_sdp`` is the SDP answer the ACK carried: with a late offer (an INVITE without SDP)
    our 200 made the offer and this is the only place the peer's media description arrives.
    It is None when the INVITE held the offer (the ACK then has no body). An offerless re-INVITE
    later in the call is answered the same way and reported again with its ``remote_sdp``.
    """

    call_id: str
    remote_sdp: bytes | None = None


@dataclass(frozen=True)
class RemoteOfferReceived:
    """The peer sent a new offer (re-INVITE or UPDATE), e.g. to hold or resume.

    It was already answered through ``UAConfig.answer_reinvite``; this tells the media side.
    """

    call_id: str
    remote_sdp: bytes


@dataclass(frozen=True)
class CallEnded:
    """The call is over and the user agent has forgotten it. ``reason`` is one of END_REASONS."""

    call_id: str
    reason: str
    status: int | None = None

    def __post_init__(self) -> None:
        if self.reason not in END_REASONS:
            raise ValueError(f"unknown CallEnded reason {self.reason!r}")


@dataclass(frozen=True)
class InfoReceived:
    """An in-dialog INFO (already answered 200), e.g. ``application/dtmf-relay``."""

    call_id: str
    content_type: str
    body: bytes


@dataclass(frozen=True)
class ReferProgress:
    """Progress of a transfer we asked for with REFER.

    ``status`` is the 202/4xx answer to the REFER, then the status lines of the ``message/sipfrag``
    NOTIFYs; ``final`` is True once the transfer has an outcome (the subscription ended, a final
    sipfrag status, or the REFER itself failed).
    """

    call_id: str
    status: int
    final: bool


@dataclass(frozen=True)
class ReofferAnswered:
    """The final answer to our re-INVITE (hold, resume): ``status``, and with a 2xx the peer's
    SDP answer in ``sdp`` (491: another offer was in progress, ours was not sent)."""

    call_id: str
    status: int
    sdp: bytes | None = None


@dataclass(frozen=True)
class RegistrationSucceeded:
    """The registrar accepted our binding for ``expires`` seconds (0: we are now unregistered)."""

    expires: int


@dataclass(frozen=True)
class RegistrationFailed:
    """REGISTER failed: a final error response, a challenge we could not satisfy, or a timeout (408)."""

    status: int
    reason: str


@dataclass(frozen=True)
class MessageRejected:
    """A datagram from ``addr`` was malformed or refused; ``reason`` says why (it was not processed)."""

    addr: tuple[str, int]
    reason: str


Event = Union[
    IncomingCall,
    CallProgress,
    CallRedirected,
    CallAnswered,
    CallConfirmed,
    RemoteOfferReceived,
    CallEnded,
    InfoReceived,
    ReferProgress,
    ReofferAnswered,
    RegistrationSucceeded,
    RegistrationFailed,
    MessageRejected,
]
