"""Media actions: ``play``, ``pause`` and ``record``."""

from __future__ import annotations

import logging
from typing import Any

from ivr.audio import parse_duration
from ivr.call import DtmfEvent, RecordingDone
from ivr.flows.paths import resolve_inside
from ivr.flows.registry import ActionSpec
from ivr.flows.session import CallerHungUp, FlowSession

log = logging.getLogger(__name__)

# The beep before a recording: the flow plays it (the recorder starts on its PlaybackDone, so
# the beep is not in the message).
BEEP = {"tone": "1000", "duration": 0.3}

# How long past max_length the flow waits for the recorder's RecordingDone before stopping it
# itself: a recorder that never reports must not hold the call forever.
_RECORDER_GRACE = 2.0


async def play_action(session: FlowSession, params: Any) -> str:
    """Play prompts; outcome ``done``, or ``interrupted`` when barged in."""
    interrupted = await session.play(params)
    return "interrupted" if interrupted else "done"


async def early_media_action(session: FlowSession, params: Any) -> str:
    """Play prompts before answering, as early media (183 Session Progress): the caller
    hears them, is not charged, and the call can still be rejected or transferred unanswered.
    Outcome ``done`` or ``interrupted`` as ``play``."""
    interrupted = await session.play(params, early=True)
    return "interrupted" if interrupted else "done"


async def pause_action(session: FlowSession, params: Any) -> str:
    """Wait; digits typed meanwhile are kept for the next collect. Outcome ``done``.

    Before the call is answered this simply delays answering (the caller hears ringing).
    """
    deadline = session.loop.time() + parse_duration(params)
    while (remaining := deadline - session.loop.time()) > 0:
        event = await session.next_event(remaining)
        if isinstance(event, DtmfEvent):
            session.typeahead.append(event.digit)
    return "done"


async def record_action(session: FlowSession, params: dict[str, Any]) -> str:
    """Record the caller; outcomes ``complete``, ``no_audio``, ``hangup``.

    ``vars[save_as]`` gets the file path (also when the caller hangs up mid-message, which is how
    most voicemails end) and ``vars[save_as + "_duration"]`` the length in seconds.
    """
    relative = session.render(params["to"], for_path=True)
    path = resolve_inside(session.recordings_folder(), relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    max_length = parse_duration(params.get("max_length", 120))
    silence_timeout = parse_duration(params.get("silence_timeout", 5))
    min_length = parse_duration(params.get("min_length", 0.5))
    finish_keys = params.get("finish_on_key", "#")
    options = {
        "beep": bool(params.get("beep", True)),
        "max_length": max_length,
        "silence_timeout": silence_timeout,
        "finish_on_key": finish_keys,
        "stereo": bool(params.get("stereo", False)),
        "trim": bool(params.get("trim", True)),
    }
    save_as = params.get("save_as")
    if save_as:
        session.vars[save_as] = str(path)
    if options["beep"]:
        await session.play(BEEP, barge_in=set())
    session.typeahead.clear()  # a key typed before the beep must not end the recording
    session.trace("record", f"{relative} max {max_length:g}s silence {silence_timeout:g}s")
    session.call.start_recording(str(path), **options)
    started = session.loop.time()
    done: RecordingDone | None = None
    stop_sent = False
    try:
        while done is None:
            remaining = started + max_length + _RECORDER_GRACE - session.loop.time()
            if remaining <= 0 and not stop_sent:
                log.warning("call %s: recorder silent past max_length; stopping it", session.call.id)
                session.call.stop_recording("max_length")
                stop_sent = True
            event = await session.next_event(max(remaining, _RECORDER_GRACE) if stop_sent else remaining)
            if isinstance(event, DtmfEvent) and event.digit in finish_keys and not stop_sent:
                session.call.stop_recording("key")
                stop_sent = True
            elif isinstance(event, RecordingDone) and event.path == str(path):
                done = event
            elif event is None and stop_sent:
                raise RuntimeError("the recorder never reported the end of the recording")
    except CallerHungUp:
        session.call.stop_recording("hangup")
        raise
    # with trim the recorder has cut the silence around the message from the file: what it
    # reports is the message (the silence that ended it is not counted, nor kept)
    heard = done.duration
    if save_as:
        session.vars[f"{save_as}_duration"] = round(max(heard, 0.0), 3)
    session.trace("recorded", f"{done.duration:.2f}s ({done.reason})")
    return "complete" if heard >= min_length else "no_audio"


SPECS = [
    ActionSpec("play", play_action, outcomes=("done", "interrupted", "hangup"), renders_params=False),
    ActionSpec("early_media", early_media_action, outcomes=("done", "interrupted", "hangup"), needs_media=False,
               renders_params=False),
    ActionSpec("pause", pause_action, outcomes=("done", "hangup"), needs_media=False, renders_params=False),
    ActionSpec("record", record_action, outcomes=("complete", "no_audio", "hangup"), renders_params=False),
]
