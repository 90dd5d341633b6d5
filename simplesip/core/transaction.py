"""Sans-IO SIP transactions (RFC 3261 §17, with the RFC 6026 "Accepted" states).

Each transaction is a small state machine. Its methods take one input (a message from the wire, a
message from the transaction user, or a timer that fired) and return a list of *effects* for the
owner to carry out: :class:`Send` a message, :class:`StartTimer` / :class:`StopTimer`, :class:`Deliver`
a message to the transaction user, report :class:`TimedOut`, and :class:`Terminate`. Nothing here
reads a clock, holds a deadline or touches a socket; timer delays are relative, the owner turns them
into deadlines.

Rules the machines follow (state -> input -> effects):

Client INVITE (17.1.1): Calling --start--> send, A=T1 (UDP only), B=64*T1.
  Calling --A--> resend, A doubles.  Calling|Proceeding --1xx--> Proceeding, deliver.
  --300-699--> Completed, send ACK, deliver, D=64*T1 (0 on reliable transports); a retransmitted final
  response in Completed only resends the ACK.  --2xx--> Accepted, deliver, M=64*T1; 2xx retransmissions
  in Accepted are delivered too (the UAC core re-sends its own ACK for them).  B in Calling -> timed out.
Client non-INVITE (17.1.2): Trying --start--> send, E=T1 (UDP), F=64*T1. E resends with doubling up to
  T2 (fixed T2 once a 1xx arrived). Final --> Completed, deliver, K=T4 (0 reliable). F -> timed out.
Server INVITE (17.2.1): Proceeding; a retransmitted INVITE resends the last response. TU 1xx: send.
  TU 2xx: send, Accepted, L=64*T1 (the UAS core, not the transaction, retransmits the 2xx; ACKs for
  it are delivered). TU 300-699: send, Completed, G=T1 (UDP), H=64*T1; G resends with doubling up to
  T2; ACK --> Confirmed, I=T4 (0 reliable); H -> timed out (no ACK).
Server non-INVITE (17.2.2): Trying; TU 1xx -> Proceeding; TU final -> Completed, J=64*T1 (0 reliable);
  retransmitted requests resend the last response.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Union

from simplesip.wire.headers import Headers
from simplesip.wire.message import Request, Response

__all__ = [
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "Deliver",
    "Effect",
    "Send",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "StartTimer",
    "StopTimer",
    "Terminate",
    "TimedOut",
    "TimerConfig",
    "TxState",
    "build_non2xx_ack",
    "client_key",
    "server_key",
]

logger = logging.getLogger(__name__)

MAGIC_COOKIE = "z9hG4bK"

Message = Union[Request, Response]


class TxState(str, Enum):
    """Transaction states of RFC 3261 §17 plus ``ACCEPTED`` from RFC 6026."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class TimerConfig:
    """Base timer values (seconds) and whether the transport is reliable (TCP: no retransmissions)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    reliable: bool = False

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L, M; also Timer D (32 s with the default T1)."""
        return 64 * self.t1


# --- effects -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Put ``message`` on the wire towards the transaction's peer."""

    message: Message


@dataclass(frozen=True)
class StartTimer:
    """(Re)arm timer ``name`` to fire ``delay`` seconds from now."""

    name: str
    delay: float


@dataclass(frozen=True)
class StopTimer:
    """Disarm timer ``name``."""

    name: str


@dataclass(frozen=True)
class Deliver:
    """Hand ``message`` to the transaction user (a response for clients, an ACK for INVITE servers)."""

    message: Message


@dataclass(frozen=True)
class TimedOut:
    """The transaction failed for lack of an answer (Timer B/F) or an ACK (Timer H)."""

    timer: str


@dataclass(frozen=True)
class Terminate:
    """The transaction is finished; the owner forgets it and its timers."""


Effect = Union[Send, StartTimer, StopTimer, Deliver, TimedOut, Terminate]


# --- matching keys -----------------------------------------------------------------------------


def client_key(message: Message) -> tuple[str, str]:
    """Key matching a response to its client transaction (17.1.3): top Via branch + CSeq method."""
    return (message.vias[0].branch or "", message.cseq[1])


def server_key(request: Request, method: str | None = None) -> tuple:
    """Key matching a request to a server transaction (17.2.3).

    With an RFC 3261 branch: branch, sent-by and method (ACK matches its INVITE). Without the magic
    cookie (RFC 2543 peers): request-URI, To tag, From tag, Call-ID, CSeq number, method and the
    whole top Via; for INVITE (and so ACK) the To tag is left out, because the ACK carries the tag of
    our response, which :class:`ServerInviteTransaction` checks itself. ``method`` overrides the
    request's own, e.g. to find the INVITE a CANCEL refers to.
    """
    via = request.vias[0]
    wanted = method or request.method
    if wanted == "ACK":
        wanted = "INVITE"
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, via.host.lower(), via.port, wanted)
    return (
        "2543",
        request.uri,
        "" if wanted == "INVITE" else request.to_tag or "",
        request.from_tag or "",
        request.call_id,
        request.cseq[0],
        wanted,
        str(via),
    )


def build_non2xx_ack(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (17.1.1.3).

    Same request-URI, Call-ID, From and branch as the INVITE, To from the response (its tag), one Via,
    and the INVITE's Route headers.
    """
    headers = Headers()
    headers.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", invite.headers.get("Max-Forwards") or "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} ACK")
    return Request("ACK", invite.uri, headers)


# --- client transactions -----------------------------------------------------------------------


class ClientInviteTransaction:
    """Client INVITE transaction (RFC 3261 17.1.1, RFC 6026 Accepted state)."""

    def __init__(self, request: Request, timers: TimerConfig) -> None:
        self.request = request
        self.timers = timers
        self.state = TxState.CALLING
        self.key = client_key(request)
        self.ack: Request | None = None
        self._interval_a = timers.t1

    def start(self) -> list[Effect]:
        """Send the INVITE and arm Timers A (unreliable only) and B."""
        effects: list[Effect] = [Send(self.request), StartTimer("B", self.timers.timeout)]
        if not self.timers.reliable:
            effects.append(StartTimer("A", self._interval_a))
        return effects

    def on_response(self, response: Response) -> list[Effect]:
        """A response matched this transaction."""
        status = response.status
        if self.state in (TxState.CALLING, TxState.PROCEEDING):
            if status < 200:
                # Timer B only guards Calling: a ringing phone may ring for minutes (17.1.1.2).
                self.state = TxState.PROCEEDING
                return [StopTimer("A"), StopTimer("B"), Deliver(response)]
            if status < 300:
                self.state = TxState.ACCEPTED
                return [StopTimer("A"), StopTimer("B"), StartTimer("M", self.timers.timeout),
                        Deliver(response)]
            self.state = TxState.COMPLETED
            self.ack = build_non2xx_ack(self.request, response)
            effects: list[Effect] = [StopTimer("A"), StopTimer("B"), Send(self.ack), Deliver(response)]
            return effects + self._wait_then_end("D", self.timers.timeout)
        if self.state == TxState.COMPLETED and status >= 300 and self.ack is not None:
            return [Send(self.ack)]  # our ACK was lost: the final response came again
        if self.state == TxState.ACCEPTED and 200 <= status < 300:
            return [Deliver(response)]  # the core re-sends its end-to-end ACK
        return []

    def on_timer(self, name: str) -> list[Effect]:
        """Timer ``name`` fired."""
        if name == "A" and self.state == TxState.CALLING:
            self._interval_a *= 2
            return [Send(self.request), StartTimer("A", self._interval_a)]
        if name == "B" and self.state == TxState.CALLING:
            self.state = TxState.TERMINATED
            return [StopTimer("A"), TimedOut("B"), Terminate()]
        if name in ("D", "M") and self.state in (TxState.COMPLETED, TxState.ACCEPTED):
            self.state = TxState.TERMINATED
            return [Terminate()]
        return []

    def _wait_then_end(self, timer: str, delay: float) -> list[Effect]:
        if self.timers.reliable:
            self.state = TxState.TERMINATED
            return [Terminate()]
        return [StartTimer(timer, delay)]


class ClientNonInviteTransaction:
    """Client non-INVITE transaction (RFC 3261 17.1.2)."""

    def __init__(self, request: Request, timers: TimerConfig) -> None:
        self.request = request
        self.timers = timers
        self.state = TxState.TRYING
        self.key = client_key(request)
        self._interval_e = timers.t1

    def start(self) -> list[Effect]:
        """Send the request and arm Timers E (unreliable only) and F."""
        effects: list[Effect] = [Send(self.request), StartTimer("F", self.timers.timeout)]
        if not self.timers.reliable:
            effects.append(StartTimer("E", self._interval_e))
        return effects

    def on_response(self, response: Response) -> list[Effect]:
        """A response matched this transaction."""
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return []  # retransmitted final responses are absorbed in Completed
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return [Deliver(response)]
        self.state = TxState.COMPLETED
        effects: list[Effect] = [StopTimer("E"), StopTimer("F"), Deliver(response)]
        if self.timers.reliable:
            self.state = TxState.TERMINATED
            return effects + [Terminate()]
        return effects + [StartTimer("K", self.timers.t4)]

    def on_timer(self, name: str) -> list[Effect]:
        """Timer ``name`` fired."""
        if name == "E" and self.state in (TxState.TRYING, TxState.PROCEEDING):
            # In Proceeding the interval stays at T2 (17.1.2.2); in Trying it doubles up to T2.
            if self.state == TxState.PROCEEDING:
                self._interval_e = self.timers.t2
            else:
                self._interval_e = min(self._interval_e * 2, self.timers.t2)
            return [Send(self.request), StartTimer("E", self._interval_e)]
        if name == "F" and self.state in (TxState.TRYING, TxState.PROCEEDING):
            self.state = TxState.TERMINATED
            return [StopTimer("E"), TimedOut("F"), Terminate()]
        if name == "K" and self.state == TxState.COMPLETED:
            self.state = TxState.TERMINATED
            return [Terminate()]
        return []


# --- server transactions -----------------------------------------------------------------------


class ServerInviteTransaction:
    """Server INVITE transaction (RFC 3261 17.2.1, RFC 6026 Accepted state)."""

    def __init__(self, request: Request, timers: TimerConfig) -> None:
        self.request = request
        self.timers = timers
        self.state = TxState.PROCEEDING
        self.key = server_key(request)
        self.last_response: Response | None = None
        self._interval_g = timers.t1

    def on_request(self, request: Request) -> list[Effect]:
        """A request matched this transaction: an INVITE retransmission or an ACK."""
        if request.method == "ACK":
            return self._on_ack(request)
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self.last_response is not None:
            return [Send(self.last_response)]
        return []  # Accepted: the UAS core retransmits its 2xx on its own schedule

    def _on_ack(self, ack: Request) -> list[Effect]:
        if self.state == TxState.COMPLETED:
            if self.key[0] == "2543" and self.last_response is not None:
                # RFC 2543 matching also needs the To tag of the response we sent (17.2.3).
                if (ack.to_tag or "") != (self.last_response.to_tag or ""):
                    return []
            self.state = TxState.CONFIRMED
            effects: list[Effect] = [StopTimer("G"), StopTimer("H")]
            if self.timers.reliable:
                self.state = TxState.TERMINATED
                return effects + [Terminate()]
            return effects + [StartTimer("I", self.timers.t4)]
        if self.state == TxState.ACCEPTED:
            return [Deliver(ack)]
        return []

    def send_response(self, response: Response) -> list[Effect]:
        """The transaction user answers the INVITE."""
        if self.state != TxState.PROCEEDING:
            logger.debug("response %d ignored in state %s", response.status, self.state.value)
            return []
        self.last_response = response
        if response.status < 200:
            return [Send(response)]
        if response.status < 300:
            self.state = TxState.ACCEPTED
            return [Send(response), StartTimer("L", self.timers.timeout)]
        self.state = TxState.COMPLETED
        effects: list[Effect] = [Send(response), StartTimer("H", self.timers.timeout)]
        if not self.timers.reliable:
            effects.append(StartTimer("G", self._interval_g))
        return effects

    def on_timer(self, name: str) -> list[Effect]:
        """Timer ``name`` fired."""
        if name == "G" and self.state == TxState.COMPLETED and self.last_response is not None:
            self._interval_g = min(self._interval_g * 2, self.timers.t2)
            return [Send(self.last_response), StartTimer("G", self._interval_g)]
        if name == "H" and self.state == TxState.COMPLETED:
            self.state = TxState.TERMINATED
            return [StopTimer("G"), TimedOut("H"), Terminate()]
        if name in ("I", "L") and self.state in (TxState.CONFIRMED, TxState.ACCEPTED):
            self.state = TxState.TERMINATED
            return [Terminate()]
        return []


class ServerNonInviteTransaction:
    """Server non-INVITE transaction (RFC 3261 17.2.2)."""

    def __init__(self, request: Request, timers: TimerConfig) -> None:
        self.request = request
        self.timers = timers
        self.state = TxState.TRYING
        self.key = server_key(request)
        self.last_response: Response | None = None

    def on_request(self, request: Request) -> list[Effect]:
        """A retransmission of the request: repeat the last response, if any."""
        if self.last_response is not None and self.state != TxState.TERMINATED:
            return [Send(self.last_response)]
        return []

    def send_response(self, response: Response) -> list[Effect]:
        """The transaction user answers the request."""
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return []
        self.last_response = response
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return [Send(response)]
        self.state = TxState.COMPLETED
        if self.timers.reliable:
            self.state = TxState.TERMINATED
            return [Send(response), Terminate()]
        return [Send(response), StartTimer("J", self.timers.timeout)]

    def on_timer(self, name: str) -> list[Effect]:
        """Timer ``name`` fired."""
        if name == "J" and self.state == TxState.COMPLETED:
            self.state = TxState.TERMINATED
            return [Terminate()]
        return []


ClientTransaction = Union[ClientInviteTransaction, ClientNonInviteTransaction]
ServerTransaction = Union[ServerInviteTransaction, ServerNonInviteTransaction]
