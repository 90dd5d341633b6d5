"""The record the user agent core keeps for each call (private to :mod:`simplesip.useragent`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simplesip._ua_layer import OutgoingRequest, TransactionEntry
from simplesip._ua_messages import Address
from simplesip.dialog import Dialog
from simplesip.message import Request, Response

if TYPE_CHECKING:
    from simplesip._ua_calls import CallManager

# Call states. UAC: calling -> early -> confirmed. UAS: incoming -> answering (200 sent, no ACK yet)
# -> confirmed. Every path ends in "ended", at which point the call is no longer in any table.
CALLING, EARLY, INCOMING, ANSWERING, CONFIRMED, ENDED = (
    "calling", "early", "incoming", "answering", "confirmed", "ended"
)


@dataclass(eq=False)
class Call:
    """Everything the core keeps about one call."""

    manager: "CallManager"  # fires the call's timers
    call_id: str
    role: str  # "uac" | "uas"
    transport: str
    state: str
    local_tag: str
    invite: Request  # UAC: the INVITE last sent (auth retries replace it); UAS: the INVITE received
    local_sdp: bytes = b""
    dialog: Dialog | None = None
    outgoing: OutgoingRequest | None = None  # UAC INVITE
    server_entry: TransactionEntry | None = None  # UAS INVITE transaction
    provisional_seen: bool = False
    cancel_requested: bool = False
    cancel_sent: bool = False
    ack: Request | None = None  # UAC: our ACK for the 2xx, re-sent when the 2xx is retransmitted
    ack_dest: Address | None = None
    pending_2xx: Response | None = None  # UAS: 2xx being retransmitted until its ACK
    pending_2xx_dest: Address | None = None
    retransmit_interval: float = 0.0
    refer_active: bool = False
    bye_after_ack: bool = False  # UAS hung up before the ACK came: BYE goes once it does (15)
    # UAC: ACKs of the dialogs we refused with ACK + BYE (other forks, late 2xx), by To tag, so a
    # retransmitted 2xx gets its ACK again and not another BYE.
    unwanted_acks: dict[str, tuple[Request, Address]] = field(default_factory=dict)
    offer_in_2xx: bool = False  # the (re-)INVITE we answered had no SDP: the ACK brings the answer

    def fire(self, name: str, now: float) -> None:
        """A call timer is due (2xx retransmission, missing ACK, CANCEL guard)."""
        self.manager.on_call_timer(self, name, now)
