"""What a real peer and we heard of each other: each side plays a steady tone, and the tests check
its pitch by FFT in what the other side received (decrypted, for SRTP)."""

from __future__ import annotations

from typing import Any

import numpy as np

from simplesip import Call
from tests.helpers.peers import dominant_frequency, read_wav, tone

__all__ = ["ToneCallee", "after_onset", "check_tones"]


def after_onset(pcm: np.ndarray, rate: int) -> np.ndarray:
    """The signal from 100 ms after it first gets loud (skips leading silence and the attack)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 1000)
    return pcm[loud[0] + rate // 10:] if len(loud) else pcm[:0]


def check_tones(heard: list[bytes], peer: Any, peer_hz: float, our_hz: float) -> None:
    """The peer's tone (``peer_hz``) reached us in ``heard`` (8 kHz PCM frames) and ours
    (``our_hz``) reached the peer: its recording of what it decoded (``peer.recordings("dec")``,
    a baresip runner) holds it."""
    pcm = np.frombuffer(b"".join(heard), dtype="<i2")
    tone_in = after_onset(pcm, 8000)
    assert len(tone_in) >= 8000, "less than a second of the peer's tone reached us"
    assert abs(dominant_frequency(tone_in[:8000]) - peer_hz) < 10
    (recording,) = peer.recordings("dec")
    samples, rate = read_wav(recording)
    tone_out = after_onset(samples, rate)
    assert len(tone_out) >= rate, "the peer heard less than a second of our tone"
    assert abs(dominant_frequency(tone_out[:rate], rate) - our_hz) < 10


class ToneCallee:
    """An ``on_incoming_call`` that answers every call with ``seconds`` of a ``hz`` tone and keeps
    the calls it answered, the audio it heard and the digits it got."""

    def __init__(self, hz: float, seconds: float = 3) -> None:
        self.hz, self.seconds = hz, seconds
        self.answered: list[Call] = []
        self.heard: list[bytes] = []
        self.digits: list[str] = []

    async def __call__(self, call: Call) -> None:
        self.answered.append(call)
        call.on_audio = self.heard.append
        call.on_dtmf = lambda digit, _source, _ms: self.digits.append(digit)
        call.queue_pcm(tone(self.hz, self.seconds).tobytes())
        await call.answer()
