"""In-band DTMF under speech and music (talk-down): the seeded set of tests/helpers/dtmf_talkdown.py.

Figures and the command that prints them: docs/plugins.md, "In-band DTMF detection".
The floors below sit 2-3 points under the rates the detector reaches on the tests' seed (17;
bench/dtmf_talkdown.py); the detector's settings were searched on other seeds (18, 19) and the docs
also give the rates on held-out seeds (101-103). Issue 17's targets (95 % at 0 dB, 80 % at -7 dB)
are not reached; a floor is raised to its target the day the target is reached. Wrong keys under -7 dB interference are not zero: the
ceilings are the counts measured.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import dtmf_talkdown as td
from tests.helpers.audio import PARAGRAPHS, VOICES, speech

#: Reached by the detector (bench/dtmf_talkdown.py: 91.2, 77.5, 92.5, 46.2 %), 2-3 points under.
FLOORS = {("speech", 0.0): 0.89, ("speech", -7.0): 0.75, ("music", 0.0): 0.90, ("music", -7.0): 0.44}
#: Wrong keys (another key, or a second report) out of 160, as measured: a key's tone masked by the
#: interferer and a harmonic or note of it taken for that tone.
WRONG = {("speech", 0.0): 0, ("speech", -7.0): 1, ("music", 0.0): 0, ("music", -7.0): 2}
CONDITIONS = [(kind, sir) for kind in td.INTERFERERS for sir in (0.0, -7.0)]


@pytest.fixture(scope="module")
def scores() -> dict[tuple[str, float], td.Score]:
    out = {}
    for kind, sir in CONDITIONS:
        clips = td.build_clips(kind, sir)
        out[kind, sir] = td.score(clips, td.detect_batch(clips.pcm))
    return out


def test_every_key_of_the_set_is_detected_without_interference() -> None:
    for kind in td.INTERFERERS:
        clips = td.build_clips(kind, None, count=32)
        assert td.detect_batch(clips.pcm) == list(clips.keys)


@pytest.mark.parametrize(("kind", "sir"), CONDITIONS)
def test_talk_down_rate_floor_and_wrong_key_ceiling(scores, kind: str, sir: float) -> None:
    score = scores[kind, sir]
    assert score.wrong <= WRONG[kind, sir]
    assert score.rate >= FLOORS[kind, sir]


@pytest.mark.parametrize("voices", [VOICES, td.TALK_OFF_EXTRA_VOICES], ids=["test-voices", "more-voices"])
def test_no_talk_off_on_speech_through_g711(voices: tuple[str, ...]) -> None:
    signals = [td.through_g711(np.concatenate([speech(text, voice) for text in PARAGRAPHS])) for voice in voices]
    length = max(len(s) for s in signals)
    pcm = np.stack([np.concatenate([s, np.zeros(length - len(s), np.int16)]) for s in signals])
    assert td.detect_batch(pcm) == [""] * len(voices)


def test_no_talk_off_on_music() -> None:
    assert td.stream_false_digits(td.music_talk_off_pcm()) == ""
