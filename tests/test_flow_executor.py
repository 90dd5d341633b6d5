"""The executor on a real asyncio loop with fake media, as the engine runs it (no simulate)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.call import CallContext, HangupEvent, PlaybackDone, PlayItem
from ivr.flows import collect_actions, load_flow, run_flow


class InstantMedia:
    """Plays every item in 10 ms of real time."""

    def __init__(self) -> None:
        self.played: list[PlayItem] = []

    def ivr_play(self, call: CallContext, item: PlayItem) -> bool:
        self.played.append(item)
        asyncio.get_running_loop().call_later(0.01, call.emit, PlaybackDone(item.id))
        return True

    def ivr_stop_playback(self, call: CallContext) -> None:
        pass

    def ivr_dtmf(self, call: CallContext, digit: str, source: str) -> None:
        pass


class Controller:
    def __init__(self) -> None:
        self.log: list[str] = []

    async def answer(self) -> None:
        self.log.append("answer")

    async def hangup(self) -> None:
        self.log.append("hangup")

    async def reject(self, status: int) -> None:
        self.log.append(f"reject {status}")

    async def transfer(self, target: str) -> str:
        self.log.append(f"transfer {target}")
        return "ok"


def make_call() -> tuple[CallContext, InstantMedia, Controller]:
    media = InstantMedia()
    call = CallContext("c-1", media, from_uri="sip:1001@127.0.0.1", from_user="1001", to_user="ivr")
    call.controller = Controller()
    return call, media, call.controller


async def test_menu_choice_then_transfer_on_a_real_loop(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(
        "start: m\nnodes:\n  m: {menu: {prompt: {say: Menu}, options: {'2': t}, timeout: 1s}}\n"
        "  t: {transfer: \"sip:{{ config.desk }}@127.0.0.1\"}\n"
    )
    call, media, controller = make_call()
    asyncio.get_running_loop().call_later(0.05, call.report_dtmf, "2", "rfc4733")
    outcome = await asyncio.wait_for(
        run_flow(load_flow(path), call, {"desk": "300"}, collect_actions()), 5
    )
    assert outcome == "transferred"
    assert controller.log == ["answer", "transfer sip:300@127.0.0.1"]
    assert [item.value for item in media.played] == ["Menu"]
    assert call.flow is not None


async def test_hangup_while_waiting_ends_the_flow(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("start: p\nnodes:\n  p: {pause: 30s, next: q}\n  q: {play: {say: never}}\n")
    call, media, controller = make_call()
    asyncio.get_running_loop().call_later(0.05, call.emit, HangupEvent("remote_hangup"))
    outcome = await asyncio.wait_for(run_flow(load_flow(path), call, {}, collect_actions()), 5)
    assert outcome == "caller_hangup"
    assert controller.log == [] and media.played == []  # never answered, nothing played
