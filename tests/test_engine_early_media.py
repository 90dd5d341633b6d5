"""The ``early_media`` action on real calls: the engine plays a prompt in a 183 before deciding,
then rejects (the caller heard it, was never answered) or answers (media goes on)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simplesip import CallError, CallState, Endpoint, EndpointConfig
from tests.helpers.bot_rig import EngineRig

NOTICE_THEN = """\
flow: early
start: notice
nodes:
  notice:
    early_media: {{tone: "440", duration: 1s}}
    next: {then}
  closed: {{reject: 480}}
  open: {{play: {{tone: "880", duration: 1s}}, next: bye}}
  bye: {{hangup: }}
"""


async def until(predicate, timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("then", ["closed", "open"])
async def test_early_media_is_heard_before_the_final_answer(tmp_path: Path, then: str) -> None:
    async with EngineRig(tmp_path, NOTICE_THEN.format(then=then)) as rig:
        caller = Endpoint(EndpointConfig(sip_port=0, transports=("udp",), rtp_port_range=(40000, 49000)))
        await caller.start()
        try:
            attempt = asyncio.ensure_future(caller.call(rig.uri("early")))
            await until(lambda: any(c.stats().get("packets_in", 0) > 25 for c in caller.calls.values()))
            (call,) = caller.calls.values()
            assert call.state is CallState.RINGING  # half a second of the notice, unanswered
            if then == "closed":
                with pytest.raises(CallError) as refused:
                    await asyncio.wait_for(attempt, 8)
                assert refused.value.status == 480
            else:
                answered = await asyncio.wait_for(attempt, 8)
                assert answered is call
                before = call.stats()["packets_in"]
                await until(lambda: call.stats()["packets_in"] > before + 25)  # the 880 Hz prompt
                await call.hangup()
            await rig.wait_call_ended()
        finally:
            await caller.stop()
