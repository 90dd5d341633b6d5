"""The ``bot`` plugin: the flow action ``bot`` hands a live call to a voice bot over a WebSocket
speaking the Twilio Media Streams protocol (:mod:`ivr_plugins.media_streams`), so bot servers
written for Twilio (Pipecat's ``TwilioFrameSerializer``, a FastAPI app) work unchanged.

```yaml
assistant:
  bot:
    url: "wss://bots.example.com/twilio"      # ws:// or wss:// (certificates verified)
    parameters: {caller: "{{ call.from }}", account: "{{ vars.account }}"}  # -> customParameters
  on: {done: after_bot, failed: voicemail, broken: sorry}
```

Outcomes: ``done`` (the bot closed the socket normally; its last audio is played out first),
``failed`` (refused, unreachable, no answer within ``connect_timeout``, TLS or HTTP refusal),
``broken`` (the socket broke mid-call, or the bot closed with an error code), ``hangup``,
``key`` (a ``finish_on_key`` key), ``max_duration``. ``vars[save_as]`` (default ``bot``) gets
the values the bot sent (``set`` events, a JSON object as close reason) plus ``close_code``,
``close_reason``, ``error``, ``duration`` (s) and ``stream_sid``.

The plugin is one more consumer and producer on the batched media pipeline: ``ivr_audio_in``
encodes the caller's frames of every bridged call at once and queues one ``media`` message per
call per tick (written to every bot socket by one callback right after the tick); ``ivr_audio_out``
mixes the bot's queued audio into the outbound frames, 20 ms a tick that sends (a catch-up tick
after a stall holds it). DTMF (``ivr_dtmf``) goes to the bot as ``dtmf``; the vad plugin's speech start
(``ivr_speech``) barges in locally when the node asks for it (``barge_in: speech``).

Configuration (``plugins.bot``): ``max_buffer`` (seconds of bot audio queued, default 60),
``send_queue`` (caller chunks waiting for a slow bot, default 50), ``max_message_bytes`` (default
1 MiB), ``account_sid`` (the ``accountSid`` sent in ``start``).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ivr import hookimpl
from ivr.call import AudioBatch, CallContext, DtmfEvent
from ivr.flows.paths import resolve_inside
from ivr_plugins.bot_bridge import (
    FRAME_BYTES,
    BotBridge,
    BotConnectError,
    BridgeSettings,
)
from simplesip.wire.g711 import decode, encode

__all__ = ["ACTION", "NAME", "OUTCOMES", "SCHEMA", "bot_action"]

log = logging.getLogger(__name__)

NAME = "bot"
ACTION = "bot"
OUTCOMES = ("done", "failed", "broken", "hangup", "key", "max_duration")
_BARGE_IN = {"none": frozenset(), "speech": frozenset({"speech"}), "dtmf": frozenset({"dtmf"}),
             "both": frozenset({"speech", "dtmf"})}
_PLAYOUT_POLL = 0.05

_DURATION = {"$ref": "#/$defs/duration"}
_TEXT_MAP = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "description": "Bridge the call to a voice bot over WebSocket (Twilio Media Streams protocol). "
                   "Outcomes: " + ", ".join(OUTCOMES) + ".",
    "properties": {
        "url": {"type": "string", "pattern": r"^(wss?://|.*\{\{)",
                "description": "ws:// or wss:// URL of the bot (templated)"},
        "parameters": {**_TEXT_MAP, "description": "customParameters of the start message (templated)"},
        "headers": {**_TEXT_MAP, "description": "extra HTTP headers of the WebSocket handshake"},
        "connect_timeout": {**_DURATION, "description": "socket and handshake (default 1 s)"},
        "max_duration": {**_DURATION, "description": "end the bridge after this long (outcome max_duration)"},
        "barge_in": {"enum": ["none", "speech", "dtmf", "both"],
                     "description": "caller input that flushes the bot's audio at once (default none)"},
        "finish_on_key": {"type": "string", "pattern": "^[0-9*#A-Da-d]*$",
                          "description": "keys that end the bridge (outcome key)"},
        "record": {"anyOf": [{"type": "boolean"}, {"type": "string", "minLength": 1}],
                   "description": "record both directions (stereo WAV): true or a path in the recordings folder"},
        "save_as": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "verify_tls": {"type": "boolean", "description": "verify the wss:// certificate (default true)"},
        "ca_file": {"type": "string", "description": "PEM file of the CA(s) trusted for wss://"},
        "on": {"$ref": "#/$defs/outcomes"},
    },
}

_settings = BridgeSettings()
_bridged: dict[str, BotBridge] = {}  # call id -> bridge, for the media hooks' quick exit


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.bot``."""
    global _settings
    section = (config.get("plugins") or {}).get(NAME) or {}
    defaults = BridgeSettings()
    _settings = BridgeSettings(
        max_buffer=float(section.get("max_buffer", defaults.max_buffer)),
        send_queue=int(section.get("send_queue", defaults.send_queue)),
        max_message_bytes=int(section.get("max_message_bytes", defaults.max_message_bytes)),
        account_sid=str(section.get("account_sid", defaults.account_sid)),
    )


@hookimpl
def ivr_register_actions(register: Callable[..., None]) -> None:
    """Add the ``bot`` flow action."""
    register(ACTION, bot_action, schema=SCHEMA, outcomes=OUTCOMES)


# -- media ----------------------------------------------------------------------------------


@hookimpl
def ivr_audio_in(batch: AudioBatch) -> None:
    """Queue the caller's frame of every bridged call (µ-law, one encode for the batch)."""
    if not _bridged:
        return
    rows: list[int] = []
    bridges: list[BotBridge] = []
    for index, call in enumerate(batch.calls):
        bridge = call.data.get(NAME)
        if bridge is not None and bridge.streaming:
            rows.append(index)
            bridges.append(bridge)
    if not rows:
        return
    codes = encode(batch.pcm[rows] if len(rows) < len(batch.calls) else batch.pcm, "PCMU").tobytes()
    tick = batch.tick
    for position, bridge in enumerate(bridges):
        start = position * FRAME_BYTES
        bridge.caller_frame(codes[start:start + FRAME_BYTES], tick)


@hookimpl
def ivr_audio_out(batch: AudioBatch) -> None:
    """Mix the next 20 ms of each bridged call's bot audio into its outbound frame. A catch-up
    tick after a stall sends no packet (``batch.send`` is False): the bot's audio stays queued
    for the ticks that do, so nothing it sent is lost."""
    if not _bridged or not batch.send:
        return
    rows: list[int] = []
    frames: list[bytes] = []
    for index, call in enumerate(batch.calls):
        bridge = call.data.get(NAME)
        if bridge is None:
            continue
        frame = bridge.next_frame()
        if frame is not None:
            rows.append(index)
            frames.append(frame if len(frame) == FRAME_BYTES else frame.ljust(FRAME_BYTES, b"\xff"))
    if not rows:
        return
    pcm = decode(np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(-1, FRAME_BYTES), "PCMU")
    out = batch.pcm
    mixed = out[rows].astype(np.int32) + pcm
    out[rows] = np.clip(mixed, -32768, 32767)


@hookimpl
def ivr_dtmf(call: CallContext, digit: str, source: str) -> None:
    """A key press goes to the bot; with DTMF barge-in it also flushes the bot's audio."""
    bridge = call.data.get(NAME)
    if bridge is None:
        return
    if "dtmf" in bridge.barge_in:
        bridge.interrupt("dtmf")
    bridge.dtmf(digit)


@hookimpl
def ivr_speech(call: CallContext, event: str) -> None:
    """Speech barge-in: the vad plugin's ``start`` flushes the bot's audio in this very tick."""
    bridge = call.data.get(NAME)
    if bridge is None:
        return
    if event == "start" and "speech" in bridge.barge_in:
        bridge.interrupt("speech")
    elif event == "end":
        bridge.caller_stopped_speaking()


@hookimpl
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """A bridge whose flow is gone ends in the background."""
    bridge = call.data.pop(NAME, None)
    _bridged.pop(call.id, None)
    if bridge is not None:
        bridge.abort()


# -- the action -----------------------------------------------------------------------------


def _ssl_context(url: str, params: dict[str, Any], session: Any) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if params.get("ca_file"):
        context.load_verify_locations(cafile=str(session.resolve_file(params["ca_file"])))
    if params.get("verify_tls") is False:
        log.warning("call %s: TLS certificate verification is off for %s", session.call.id, url)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _recording_path(session: Any, record: Any) -> Path:
    """Where ``record:`` writes: the raw template rendered as a path (sanitised) inside the
    recordings folder; ``true`` means ``bot/<call id>.wav``."""
    raw = session.node.params.get("record") if session.node is not None else record
    relative = "bot/{{ call.id }}.wav" if raw is True else raw
    path = resolve_inside(session.recordings_folder(), str(session.render(relative, for_path=True)))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def bot_action(session: Any, params: dict[str, Any]) -> str:
    """Bridge the call to the bot until it closes, the caller hangs up, a ``finish_on_key``
    key or ``max_duration``; see the module doc for the outcomes."""
    call: CallContext = session.call
    url = str(params["url"]).strip()
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"bot url must be ws:// or wss://, got {url[:80]!r}")
    parameters = params.get("parameters")
    if parameters is None:
        parameters = {"from": call.from_user or call.from_uri, "to": call.to_user or call.to_uri}
    save_as = params.get("save_as", "bot")
    finish_keys = str(params.get("finish_on_key", ""))
    max_duration = session.duration(params, "max_duration", 0.0) or None
    barge_in = _BARGE_IN[params.get("barge_in", "none")]
    if session.simulated:
        # `ivr simulate`: a virtual clock and no media; the outcome is what --outcome bot=... says
        outcome = session.simulated_outcome("bot", "done")
        session.vars[save_as] = {"stream_sid": None, "simulated": True}
        session.trace("bot", f"{url}: not connected under simulate; outcome {outcome} (--outcome bot=...)")
        return outcome
    bridge = BotBridge(
        call, url, parameters={str(k): str(v) for k, v in parameters.items()},
        headers={str(k): str(v) for k, v in (params.get("headers") or {}).items()},
        connect_timeout=session.duration(params, "connect_timeout", 1.0), barge_in=barge_in,
        ssl_context=_ssl_context(url, params, session), settings=_settings)
    result: dict[str, Any] = {"stream_sid": bridge.stream_sid}
    session.vars[save_as] = result
    outcome = "error"
    recording: Path | None = None
    session.trace("bot", f"connecting to {url}")
    try:
        connecting = session.loop.create_task(bridge.connect())
        try:
            while not connecting.done():
                event = await session.next_event(None, until=connecting)
                if isinstance(event, DtmfEvent):
                    session.typeahead.append(event.digit)
            connecting.result()
        except BotConnectError as exc:
            result["error"] = str(exc)
            session.trace("bot", f"failed: {exc}")
            log.info("call %s: bot %s not reached: %s", call.id, url, exc)
            outcome = "failed"
            return outcome
        finally:
            if not connecting.done():
                connecting.cancel()
        start = bridge.encoder.start(bridge.parameters)
        _hook(call, "ivr_bot_start", bridge=bridge, message=start)
        call.data[NAME] = bridge
        _bridged[call.id] = bridge
        bridge.start(start)
        if params.get("record"):
            recording = _recording_path(session, params["record"])
            call.start_recording(str(recording), stereo=True, beep=False, trim=False, finish_on_key="")
            result["recording"] = str(recording)
        session.trace("bot", f"streaming ({bridge.stream_sid})")
        log.info("call %s: bridged to bot %s (stream %s)", call.id, url, bridge.stream_sid)
        outcome = await _bridge_until_end(session, bridge, finish_keys, max_duration)
        return outcome
    except BaseException:
        outcome = "hangup" if session.caller_gone else "error"
        raise
    finally:
        call.data.pop(NAME, None)
        _bridged.pop(call.id, None)
        await bridge.stop()
        if recording is not None and not session.caller_gone:
            call.stop_recording("stopped")
        if bridge.started_at is not None:
            result["duration"] = round(time.monotonic() - bridge.started_at, 3)
        result.update({k: v for k, v in bridge.values.items() if k not in result})
        result.update(close_code=bridge.close_code, close_reason=bridge.close_reason)
        result.setdefault("error", None)
        result["stats"] = dict(bridge.stats)
        if bridge.started_at is not None:
            session.trace("bot", f"{outcome} (close {bridge.close_code}) {bridge.summary()}")
            log.info("call %s: bot %s ended: %s, close %s %r; %s", call.id, url, outcome, bridge.close_code,
                     bridge.close_reason, bridge.summary() or "no faults")
        _hook(call, "ivr_bot_ended", bridge=bridge, outcome=outcome)


async def _bridge_until_end(session: Any, bridge: BotBridge, finish_keys: str, max_duration: float | None) -> str:
    deadline = session.loop.time() + max_duration if max_duration else None
    while not bridge.finished.done():
        remaining = None if deadline is None else deadline - session.loop.time()
        if remaining is not None and remaining <= 0:
            return "max_duration"
        event = await session.next_event(remaining, until=bridge.finished)
        if isinstance(event, DtmfEvent) and event.digit in finish_keys and finish_keys:
            session.trace("bot", f"finish key {event.digit}")
            return "key"
    outcome = bridge.finished.result()
    if outcome == "done":
        # the bot said goodbye and hung up: let its last words reach the caller
        while bridge.pending_audio > 0:
            await session.next_event(_PLAYOUT_POLL)
    return outcome


def _hook(call: CallContext, name: str, **kwargs: Any) -> None:
    hook = getattr(call.hook, name, None)
    if hook is None:  # a host without these hooks
        return
    try:
        hook(call=call, **kwargs)
    except Exception:
        log.exception("call %s: a plugin raised in %s", call.id, name)
