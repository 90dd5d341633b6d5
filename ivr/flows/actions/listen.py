"""The ``listen`` action: play a prompt, hear one utterance, store what was said.

```yaml
ask_name:
  listen:
    prompt: {say: "After the tone, say your name."}
    grammar: [yes, no]        # optional: without it, free dictation
    save_as: answer           # vars.answer, vars.answer_confidence (default: speech)
    timeout: 5s               # no speech by then: no_input
    min_confidence: 0.5       # under it: no_match
  on: {ok: check, no_match: again, no_input: again}
```

Outcomes: ``ok``, ``no_match``, ``no_input``, ``hangup``. A key press ends the node with
``dtmf`` (the key stays in the type-ahead buffer for the next menu or collect): a caller who
types instead of talking must not wait for speech.
"""

from __future__ import annotations

from typing import Any

from ivr.call import DtmfEvent, SpeechEvent
from ivr.flows import speech
from ivr.flows.actions import recognition
from ivr.flows.registry import ActionSpec
from ivr.flows.session import FlowSession


async def listen_action(session: FlowSession, params: dict[str, Any]) -> str:
    """Listen for one utterance; see the module doc for parameters and outcomes."""
    params = params or {}
    grammar = params.get("grammar")
    grammar = [str(p) for p in grammar] if isinstance(grammar, list) else grammar
    needed = recognition.min_speech(session, params)
    max_speech = session.duration(params, "max_speech", speech.DEFAULT_MAX_SPEECH)
    timeout = session.duration(params, "timeout", 5.0)
    if session.typeahead:
        session.trace("type-ahead", "".join(session.typeahead))
        return "dtmf"
    barged = await session.play(params.get("prompt"), min_speech=needed)
    speaking = barged == "speech"
    if barged == "dtmf":
        return "dtmf"
    while True:
        event = await session.next_event(max_speech if speaking else timeout)
        if event is None:
            if speaking:
                session.trace("speech", f"longer than max_speech {max_speech:g}s")
                return "no_match"
            session.trace("timer", f"no speech in {timeout:g}s")
            return "no_input"
        if isinstance(event, DtmfEvent):
            session.typeahead.append(event.digit)
            session.trace("speech", "cancelled by dtmf")
            return "dtmf"
        if not isinstance(event, SpeechEvent):
            continue
        if event.kind == "start":
            speaking = True
            continue
        if not speaking:
            continue  # an utterance that began during a prompt without speech barge-in
        speaking = False
        if not speech.speech_long_enough(session.call.voice, needed):
            session.trace("speech", "too short, ignored")
            continue
        try:
            result = await recognition.recognise(session, params, grammar)
        except recognition.SpeechCancelled:
            return "dtmf"
        if result is None:
            return "no_match"
        recognition.remember(session, result, params.get("save_as"))
        return "ok"


SPECS = [
    ActionSpec("listen", listen_action, outcomes=("ok", "no_match", "no_input", "dtmf", "hangup"),
               renders_params=False),
]
