"""The engine end to end (issue 4): baresip, a real softphone, calls ``ivr serve`` (a separate
process, built-in plugins, a test flow). It speaks (an espeak-ng WAV as its microphone), then
presses keys over ctrl_tcp. What the product must show:

- the endpoint records the caller: the WAV in the recordings folder holds baresip's speech
  (same waveform by cross-correlation, same level, a length that fits what was sent);
- it reports the speech (vad start/end) and the digits (``ivr_dtmf`` with source ``rfc4733``, the
  CDR's ``digits``, the flow's ``save_as`` variable), seen through a test plugin that logs hooks;
- it plays its prompts: baresip's recording of what it heard holds the 440 Hz prompt and then
  the 880 Hz confirmation, in that order.
"""

from __future__ import annotations

import json
import shutil
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from ivr_plugins.recording import TRIM_MARGIN
from tests.helpers.audio import speech
from tests.helpers.e2e_audio import (
    RATE,
    assert_contains,
    loud_spans,
    rms_db,
    tone_share,
)
from tests.helpers.paths import DATA
from tests.helpers.peers import BaresipRunner, dominant_frequency, read_wav
from tests.helpers.robust_server import IvrServeProcess
from tests.helpers.waiting import wait_for_sync

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

E2E_DATA = DATA / "e2e"

#: Record the caller until 2 s of silence, then ask for two digits with a 440 Hz prompt, confirm
#: with 880 Hz and hang up.
FLOW = """\
flow: engine
start: message
nodes:
  message:
    record: {to: "{{ call.id }}.wav", beep: false, max_length: 10s, silence_timeout: 2s,
             min_length: 500ms, finish_on_key: "#", save_as: message}
    on: {complete: ask, no_audio: ask}
  ask:
    collect: {prompt: {tone: "440", duration: 1500ms}, max_digits: 2, timeout: 8s,
              inter_digit_timeout: 4s, save_as: code}
    on: {ok: thanks, timeout: bye, invalid: bye}
  thanks:
    play: {tone: "880", duration: 600ms}
    barge_in: none
    next: bye
  bye: {hangup: }
"""

LEAD_SECONDS = 0.8
SPOKEN = "Hello, this is a test message for the voice mail."


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_baresip_speaks_and_presses_keys_engine_records_reports_and_prompts(tmp_path: Path) -> None:
    folder = tmp_path / "ivr"
    folder.mkdir()
    shutil.copy(E2E_DATA / "e2e_events.py", folder / "e2e_events.py")
    events_path = folder / "events.jsonl"
    voice = speech(SPOKEN)
    microphone = np.concatenate([np.zeros(int(LEAD_SECONDS * RATE), np.int16), voice,
                                 np.zeros(15 * RATE, np.int16)])  # aufile hangs up at end of file
    extra = f"plugins: {{load: [e2e_events], e2e_events: {{path: {events_path}}}}}\n"
    with IvrServeProcess(folder, FLOW, extra, transports="[udp]") as server:
        baresip = BaresipRunner(tmp_path / "baresip", microphone=microphone, run_seconds=20,
                                commands=[f"/dial sip:engine@127.0.0.1:{server.port}"])
        with baresip:
            def logs() -> str:
                return server.log() + baresip.log()

            # the 440 Hz prompt starts once the message has been recorded: then press 4, 2
            wait_for_sync(lambda: any(e["event"] == "play" and e["value"] == "440" for e in _events(events_path)),
                          20, lambda: f"the digit prompt:\n{logs()[-3000:]}", interval=0.05)
            time.sleep(1.8)  # let the 1.5 s prompt play out (a key would barge in and cut it)
            baresip.command("sndcode", "4")
            time.sleep(0.4)
            baresip.command("sndcode", "2")
            wait_for_sync(lambda: any(e["event"] == "ended" for e in _events(events_path)), 15,
                          lambda: f"the hang-up:\n{logs()[-3000:]}", interval=0.05)
            time.sleep(0.5)  # baresip closes its recording when it sees the BYE
            heard_files = baresip.recordings("dec")
        server.stop()
        cdr = [json.loads(line) for line in (folder / "cdr.jsonl").read_text().splitlines()]

    events = _events(events_path)
    [started] = [e for e in events if e["event"] == "started"]
    [ended] = [e for e in events if e["event"] == "ended"]

    # Digits: once each, from RFC 4733, in the flow's variable and in the CDR.
    assert [(e["digit"], e["source"]) for e in events if e["event"] == "dtmf"] == [("4", "rfc4733"), ("2", "rfc4733")]
    assert ended["vars"]["code"] == "42" and ended["reason"] == "local_hangup"
    [record] = cdr
    assert record["digits"] == "42" and record["flow"] == "engine" and record["outcome"] == "local_hangup"

    # Speech: one utterance, starting where baresip's voice starts, lasting about as long.
    loud = np.flatnonzero(np.abs(voice.astype(np.int32)) > 500)
    voice_start, voice_end = loud[0] / RATE, loud[-1] / RATE
    speech_events = [e for e in events if e["event"] == "speech"]
    assert [e["what"] for e in speech_events][:2] == ["start", "end"], speech_events
    onset = speech_events[0]["speech_start"] - started["time"]
    assert abs(onset - (LEAD_SECONDS + voice_start)) < 0.5, (onset, LEAD_SECONDS + voice_start)
    # espeak leaves short pauses between words: the VAD may close and reopen; the last end counts
    last_end = [e for e in speech_events if e["what"] == "end"][-1]["last_speech_end"] - started["time"]
    assert abs(last_end - (LEAD_SECONDS + voice_end)) < 0.5, (last_end, LEAD_SECONDS + voice_end)

    # Recording: the caller's voice, same waveform and level, nothing much added after it.
    [path] = ended["recordings"]
    assert ended["vars"]["message"] == path
    with wave.open(path) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        recorded = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    seconds = len(recorded) / RATE
    sent_until = LEAD_SECONDS + voice_end
    # 2 s of silence ended it; `trim` cut the file to the voice plus TRIM_MARGIN on each side
    voiced = voice_end - voice_start + 2 * TRIM_MARGIN
    assert abs(seconds - voiced) < 0.6, (seconds, voiced)
    assert abs(ended["vars"]["message_duration"] - voiced) < 0.6, (ended["vars"], voiced)
    pieces = assert_contains(voice, recorded)
    index, match = next((i, m) for i, m in enumerate(pieces) if m.correlation > 0.9)
    begins = match.offset - index * RATE // 2  # where the voice file's first sample sits in the recording
    assert abs(begins / RATE - (TRIM_MARGIN - voice_start)) < 0.3, pieces
    spoken = recorded[max(0, begins + loud[0]): begins + loud[-1]]
    # same level as sent (G.711 keeps it within a fraction of a dB; a few lost frames cost little)
    assert abs(rms_db(spoken) - rms_db(voice[loud[0]:loud[-1]])) < 1.5

    # Prompts: what baresip heard holds 440 Hz, then 880 Hz, at about their lengths.
    [heard_path] = heard_files
    heard, rate = read_wav(heard_path)
    assert rate == RATE
    spans = [(a, b) for a, b in loud_spans(heard) if b - a >= 0.3]
    assert len(spans) == 2, spans
    (a1, b1), (a2, b2) = spans
    # The whole confirmation is heard: the BYE waits for the last frames to play out at the caller.
    assert abs((b1 - a1) - 1.5) < 0.25 and 0.5 <= b2 - a2 <= 0.7, spans
    prompt = heard[int(a1 * RATE) + 400: int(b1 * RATE) - 400]
    confirmation = heard[int(a2 * RATE) + 400: int(b2 * RATE) - 400]
    assert abs(dominant_frequency(prompt) - 440) < 10 and tone_share(prompt, 440) > 0.9
    assert abs(dominant_frequency(confirmation) - 880) < 10 and tone_share(confirmation, 880) > 0.9
    # the prompt came after the caller's message was recorded (the flow's order)
    assert a1 >= sent_until, (a1, sent_until)
