"""The hook specifications of the ``ivr`` engine: the one place a plugin author reads.

Every hook is prefixed ``ivr_``. A plugin is any object or module with functions marked
``@ivr.hookimpl`` whose names match these specs; pluggy passes arguments by name, so an
implementation may accept any subset of a hook's arguments.

Each docstring is a contract: what the engine passes, and what any implementation must do or
provide. Which plugin does it is configuration (the built-ins in ``ivr_plugins`` are one way);
plugins meet through these hooks and the public objects of :mod:`ivr.call`, not through each
other's ``call.data`` state.

Hooks are grouped by lifecycle:

1. process: ``ivr_configure``, ``ivr_register_actions``, ``ivr_startup``
2. call: ``ivr_incoming_call``, ``ivr_call_started``, ``ivr_call_ended``
3. media (every 20 ms tick, batched over all live calls): ``ivr_audio_in``, ``ivr_audio_out``
4. call services asked for by flows: ``ivr_play``, ``ivr_stop_playback``, ``ivr_start_recording``,
   ``ivr_stop_recording``, ``ivr_tts``, ``ivr_stt``
5. events: ``ivr_dtmf_received`` (raw, from every source), ``ivr_dtmf`` (one per key press),
   ``ivr_speech``
6. voice-bot bridge (the ``bot`` action): ``ivr_bot_start``, ``ivr_bot_message``, ``ivr_bot_ended``

Error handling: an exception raised by an implementation fails that call (or, for a batched media
hook, the engine re-runs the implementation call by call to find the call that raised, fails that
call alone and keeps serving the others). It is logged with the plugin's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from ivr.call import AudioBatch, CallContext, PlayItem

hookspec = pluggy.HookspecMarker("ivr")
hookimpl = pluggy.HookimplMarker("ivr")


# 1. process -----------------------------------------------------------------------------


@hookspec(historic=True)
def ivr_configure(config: dict[str, Any]) -> None:
    """Called once the configuration is loaded, and again after every reload (SIGHUP).

    ``config`` is the whole parsed configuration; a plugin reads its own section
    (``config["plugins"].get("<its name>", {})``) and falls back to defaults for every key it
    lacks. Historic: a plugin registered later is called with the latest configuration too.
    Raise ``ValueError`` for a section it cannot use: ``ivr serve`` and ``ivr check`` stop with
    ``plugin <name>: refuses its configuration: <message>``. Return value ignored.
    """


@hookspec
def ivr_register_actions(register: Callable[..., None]) -> None:
    """Called once at start-up so plugins can add flow actions.

    Call ``register(name, handler, schema=None, outcomes=())`` for each action: ``handler`` is an
    ``async def handler(session, params) -> str`` returning the outcome name (checked when it is
    registered: another signature is refused in one line, before any call); ``schema`` is the
    JSON Schema of the action's parameters (used by ``ivr check`` and ``ivr schema``). Blocking
    work in a handler goes through ``session.run_blocking``, network I/O through
    ``session.run_io`` (docs/plugins.md, "Flow actions"). Return value ignored.
    """


@hookspec
def ivr_startup(config: dict[str, Any], recordings: Path) -> None:
    """Called once when the engine starts, after ``ivr_configure`` and before the first call is
    accepted: finish work an earlier process left undone (files a crash left incomplete, say).

    ``recordings`` is the configured recordings folder (it may not exist yet). No call is in
    progress, so blocking work is allowed. An exception is logged with the plugin's name and
    start-up goes on. Return value ignored.
    """


# 2. call --------------------------------------------------------------------------------


@hookspec(firstresult=True)
def ivr_incoming_call(call: CallContext) -> Any:
    """Called for each new INVITE before it is answered.

    Return ``None`` to let the next plugin (finally the engine's router) decide; a flow name
    (``str``) to run that flow; or an ``int`` SIP status (e.g. 403, 486) to reject the call.
    firstresult: the first non-None answer wins.
    """


@hookspec
def ivr_call_started(call: CallContext) -> None:
    """Called once the call's media is up: when it is answered, or earlier when the flow plays
    early media (183) before answering. Once per call."""


@hookspec
def ivr_call_ended(call: CallContext, reason: str) -> None:
    """Called once when a call ends, whatever ended it.

    ``reason`` is one of ``remote_hangup``, ``local_hangup``, ``cancelled``, ``rejected``,
    ``error``, ``shutdown``, ``transferred``. An implementation releases its per-call state here
    and finishes what the call left open (a recording in progress is finalised, with its
    ``RecordingDone``). Return value ignored.
    """


# 3. media -------------------------------------------------------------------------------


@hookspec
def ivr_audio_in(batch: AudioBatch) -> None:
    """Called every 20 ms tick with the decoded caller audio of every live call.

    ``batch.pcm`` is an ``(N, FRAME_SAMPLES)`` int16 array (:mod:`ivr.audio`: 160 samples, 20 ms
    at 8 kHz), row ``i`` belonging to ``batch.calls[i]`` (a concealment frame where a packet was
    lost); ``batch.now`` is the media clock at the end of the frame. Read-only. Implementations
    must accept a batch of any size, including one, and must not block. Return value ignored.
    """


@hookspec
def ivr_audio_out(batch: AudioBatch) -> None:
    """Called every 20 ms tick to produce the next outbound frame of every live call.

    ``batch.pcm`` starts as silence; an implementation that plays to a call writes that call's
    row, and leaves the other rows alone. An implementation marked ``trylast=True`` sees the
    frames as finally sent (what a recorder of our side needs). Must not block. Return value
    ignored.

    ``batch.send`` is False on a catch-up tick run after the event loop stalled: the frames are
    not sent (the caller hears a gap, as in the recording of our side). A source of audio should
    then write nothing and keep its place, so that its audio resumes after the gap instead of
    losing a stall's worth of it (the built-in playback does).
    """


# 4. call services -----------------------------------------------------------------------


@hookspec(firstresult=True)
def ivr_play(call: CallContext, item: PlayItem) -> Any:
    """Queue ``item`` (a file, tone, silence or text) for playing to ``call``.

    Return ``True`` when accepted; when the item has played, the implementation calls
    ``call.emit(PlaybackDone(item.id, interrupted=False))``. firstresult.
    """


@hookspec
def ivr_stop_playback(call: CallContext) -> None:
    """Flush the call's playback queue now (barge-in); must take effect within one frame.

    Each flushed item is reported as ``PlaybackDone(item.id, interrupted=True)``.
    """


@hookspec(firstresult=True)
def ivr_start_recording(call: CallContext, path: str, options: dict[str, Any]) -> Any:
    """Start recording ``call`` to the WAV file ``path``.

    ``options``: ``stereo`` (bool), ``max_length`` (s), ``silence_timeout`` (s),
    ``finish_on_key`` (str), ``trim`` (bool: when the caller ends the message with silence or the
    key, cut leading and trailing silence from the file), ``beep`` (bool: whether the flow played
    a beep before this call; the flow plays it, an implementation plays none). Return ``True``
    when accepted. When the recording stops (by itself or
    through ``ivr_stop_recording``) the implementation calls
    ``call.emit(RecordingDone(path, duration, reason))``, ``duration`` being the length of the file
    as finally written (trimmed, if it was). firstresult.
    """


@hookspec
def ivr_stop_recording(call: CallContext, reason: str) -> None:
    """Stop and finalise the call's recording, if any (header written, metadata beside it)."""


@hookspec(firstresult=True)
def ivr_tts(text: str, options: dict[str, Any]) -> Any:
    """Turn ``text`` into speech.

    Return the path of a WAV file (any rate; it is resampled) or ``None`` to let the next
    implementation try. ``options``: ``voice``, ``rate``. firstresult.
    """


@hookspec(firstresult=True)
def ivr_stt(call: CallContext, pcm: Any, options: dict[str, Any]) -> Any:
    """Recognise the utterance ``pcm``: int16 numpy array at :data:`ivr.audio.SAMPLE_RATE`, as a
    speech ``end`` delivered it (``SpeechEvent.utterance``); read it, do not change it.

    Called from a worker thread (recognition is CPU work; the media clock never waits for it), so
    an implementation must be thread-safe. ``options``: ``grammar`` (a list of phrases; the string
    ``"digits"`` for a spoken digit string; ``None`` for free dictation) and ``min_confidence``
    (0-1; below it, answer ``None``). Return ``(text, confidence)``, where with a phrase grammar
    ``text`` is one of the phrases exactly as given, or ``None`` for silence, out-of-grammar speech
    or low confidence. firstresult.
    """


# 5. events ------------------------------------------------------------------------------


@hookspec
def ivr_dtmf_received(call: CallContext, digit: str, source: str, duration_ms: int | None) -> None:
    """A raw key-press report from one source: ``rfc4733``, ``info`` or ``inband``.

    The engine reports the signalled sources (``rfc4733``, ``info``); an in-band detector reports
    ``inband``. The same key press may be reported by several sources: one implementation merges
    them and calls ``call.report_dtmf()`` once per key press, which fires ``ivr_dtmf`` and wakes
    the flow (while this hook has any implementation, the engine leaves that to it; with none,
    every report is a key press). ``duration_ms`` is the key's length where the source tells it,
    else ``None``.
    """


@hookspec
def ivr_dtmf(call: CallContext, digit: str, source: str) -> None:
    """One key press, reported once (after de-duplication across sources)."""


@hookspec
def ivr_speech(call: CallContext, event: str, utterance: Any) -> None:
    """Voice activity on the caller's side: ``event`` is ``"start"`` when the caller begins
    talking and ``"end"`` once they stop.

    With ``"end"``, ``utterance`` is the finished utterance's audio: an int16 numpy array at
    :data:`ivr.audio.SAMPLE_RATE`, from a little before the onset to a little after the last
    voiced frame (the audio a recogniser is given through ``ivr_stt``); ``None`` with ``"start"``
    and from a reporter that keeps no audio. The array is shared with the flow: read it, do not
    change it.

    A plugin that detects speech reports it with ``call.report_speech(kind, utterance)``, which
    fires this hook and puts the same :class:`~ivr.call.SpeechEvent` on the call's events, and
    keeps ``call.voice`` (:class:`~ivr.call.VoiceActivity`) current on every frame. Return value
    ignored.
    """


# 6. voice-bot bridge --------------------------------------------------------------------


@hookspec
def ivr_bot_start(call: CallContext, bridge: Any, message: dict[str, Any]) -> None:
    """Called when a ``bot`` action has connected to the bot, just before the ``start`` message
    (Twilio Media Streams) is sent; ``message`` is that message as a dict.

    An implementation may add to it, typically to ``message["start"]["customParameters"]``
    (string values); ``bridge`` (``ivr_plugins.bot_bridge.BotBridge``) has ``stream_sid``,
    ``url`` and ``send_event(name, body)``. Runs on the event loop: do not block. Return value
    ignored.
    """


@hookspec
def ivr_bot_message(call: CallContext, bridge: Any, message: dict[str, Any]) -> Any:
    """Called for every JSON message the bot sends except ``media`` (``mark``, ``clear``,
    ``set`` and events the bridge does not know), parsed, before the bridge acts on it.

    Return ``True`` to claim an event the bridge does not know (it is then not counted or
    logged as unknown); other return values are ignored. A plugin may answer through
    ``bridge.send_event(name, body)``. Runs on the event loop: do not block.
    """


@hookspec
def ivr_bot_ended(call: CallContext, bridge: Any, outcome: str) -> None:
    """Called once when a ``bot`` action ends, whatever ended it, with the action's outcome
    (``done``, ``failed``, ``broken``, ``hangup``, ``key``, ``max_duration``, ``error``).

    ``bridge.stats`` holds the bridge's counters (media sent and dropped, audio received, played,
    dropped and cleared in ms, marks, clears, barge-ins, faults), ``bridge.values`` what the bot
    handed back, ``bridge.close_code`` / ``close_reason`` how the socket closed (``None`` when it
    never opened). Return value ignored.
    """
