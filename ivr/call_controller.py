"""``call.controller``: the signalling a flow performs on its call (answer, hang up, reject,
transfer), on a simplesip ``Call``, reporting back to the engine that owns the call."""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Protocol

from ivr.call import CallContext

log = logging.getLogger(__name__)


class CallOwner(Protocol):
    """What the controller needs of the engine (:class:`ivr.engine.Engine`)."""

    def claim_end_reason(self, call: CallContext, reason: str) -> str:
        """Record why we are ending ``call`` (first claim wins); return the reason that stands."""

    def media_up(self, call: CallContext, answered: bool = True) -> None:
        """``call``'s media is up (answered, or early media before the answer): it joins the
        media clock."""

    async def end_call(self, call: CallContext, reason: str) -> None:
        """End ``call`` once (HangupEvent, ivr_call_ended, observers)."""

    def notify(self, event: str, call: CallContext, details: dict[str, Any]) -> None:
        """Tell the observers (CDR, metrics, call log)."""

    async def drain_playback(self, call: CallContext) -> None:
        """Wait until ``call``'s outbound audio has played out and reached the caller."""


class CallController:
    """``call.controller`` for one call: ``answer``, ``early_media``, ``hangup``, ``reject``,
    ``transfer``."""

    def __init__(self, owner: CallOwner, sip_call: Any, call: CallContext) -> None:
        self._owner = owner
        self._sip_call = sip_call
        self._call = call

    @property
    def sip_call(self) -> Any:
        """The simplesip ``Call`` underneath (statistics, headers)."""
        return self._sip_call

    async def answer(self) -> None:
        """Answer (200 OK); once media is up the call joins the media clock."""
        call = self._call
        if call.answer_time is not None or call.end_time is not None:
            return
        await self._sip_call.answer()
        call.answer_time = time.time()
        self._owner.media_up(call)

    async def early_media(self) -> bool:
        """Media before the answer (183 Session Progress): the call joins the media clock, and
        prompts play, while the caller is not yet charged. False when the caller's INVITE had no
        SDP offer (the flow then answers to play)."""
        call = self._call
        if call.answer_time is not None or call.end_time is not None:
            return call.answer_time is not None
        if not await self._sip_call.early_media():
            return False
        self._owner.media_up(call, answered=False)
        return True

    async def hangup(self, reason: str = "local_hangup") -> None:
        """Hang up: BYE when answered, else reject with 480 (the flow ended before answering) or
        500 (``reason`` ``error``: the flow or a plugin failed before answering).

        When the flow itself hangs up (``local_hangup``) the BYE waits until the prompt still
        playing has been sent and the audio in the caller's jitter buffer has been heard
        (``hangup_tail``): a BYE right after the last frame cuts the prompt's last words.
        """
        call = self._call
        if call.end_time is not None:
            return
        if reason == "local_hangup" and call.answer_time is not None:
            await self._owner.drain_playback(call)
            if call.end_time is not None:  # the caller hung up meanwhile
                return
        # simplesip reports the end (on_ended) while we wait; it must carry our reason, not its own
        reason = self._owner.claim_end_reason(call, reason)
        try:
            if call.answer_time is None:  # 500 when the flow failed, else 480 (it ended unanswered)
                await self._sip_call.reject(500 if reason == "error" else 480)
            else:
                await self._sip_call.hangup()
        finally:
            await self._owner.end_call(call, reason)

    async def reject(self, status: int = 486, headers: dict[str, str] | None = None) -> None:
        """Reject the call (before answer only); ``headers`` such as Retry-After are added."""
        call = self._call
        if call.answer_time is not None:
            raise RuntimeError("cannot reject an answered call; hang up instead")
        if call.end_time is not None:
            return
        self._owner.claim_end_reason(call, "rejected")
        if headers and "headers" in inspect.signature(self._sip_call.reject).parameters:
            await self._sip_call.reject(status, headers=headers)
        else:
            await self._sip_call.reject(status)
        call.reject_status = status
        self._owner.notify("rejected", call, {"status": status})
        await self._owner.end_call(call, "rejected")

    async def transfer(self, target: str) -> str:
        """Blind-transfer with REFER; ``ok`` (the call then ends as ``transferred``), ``busy``,
        ``no_answer`` or ``failed``, from the final status the transferee reported."""
        status: int | None
        try:
            status = int(await self._sip_call.refer(target))
        except Exception as exc:  # a refused/timed-out REFER is a flow outcome, not a crash
            log.warning("call %s: REFER to %s failed: %r", self._call.id, target, exc)
            status = None
        outcome = _transfer_outcome(status)
        self._record_transfer(target, status, outcome)
        if outcome == "ok":
            await self.hangup("transferred")
        return outcome

    def _record_transfer(self, target: str, status: int | None, outcome: str) -> None:
        """The attempt goes on the call (the CDR's ``transfers``) and into the call log."""
        call = self._call
        call.transfers.append({"to": target, "status": status, "outcome": outcome})
        if outcome != "ok":
            gone = " (the peer ended the dialog)" if status in (408, 481) else ""
            log.warning("call %s: transfer to %s refused: %s %s%s", call.id, target, status, outcome, gone)
        self._owner.notify("transfer", call, {"to": target, "status": status, "outcome": outcome})


def _transfer_outcome(status: int | None) -> str:
    """The flow outcome of a REFER's final status (``None``: it failed to be sent or answered)."""
    if status is not None and 200 <= status < 300:
        return "ok"
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    return "failed"
