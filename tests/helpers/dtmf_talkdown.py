"""A talk-down test set for the in-band DTMF detector: key presses under speech and music, via G.711.

Each *clip* is one key press with an interferer playing all along, as when a caller presses a key
with a radio or a TV on, or while talking:

* the key: its two sines at a seeded random level (row tone -18..-8 dBFS peak), twist (-3..+3 dB),
  frequency error (+-1 %), phase, duration (50..100 ms) and start (140..160 ms into the clip, so
  every alignment with the 20 ms ticks occurs);
* the interferer: a segment of a long speech or music stream, chosen so that it is *active* while
  the key sounds (its power over the key is no more than 10 dB under the stream's active level),
  and scaled so that over the key's own samples the interferer has ``-sir_db`` dB more power than
  the key (the signal-to-interference ratio measured locally, the strict reading);
* the sum clipped to 16 bits and sent through a G.711 mu-law encode/decode, as a call carries it.

Interferers, all made here (nothing downloaded):

* ``speech``: espeak-ng reading :data:`tests.helpers.audio.PARAGRAPHS` in its five test voices
  (the talk-off set's audio);
* ``music``: :func:`music`, a seeded synthesis of a band (pad chords, a lead with vibrato, bass and
  drums) with harmonic-rich timbres, at 8 kHz.

A clip's verdict is what the dtmf plugin reported on it: right (the key, once), missed (nothing) or
wrong (another key, or more than one report): every clip runs as its own call, all in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ivr.testing import AudioRig
from simplesip.wire import g711
from tests.helpers.audio import FRAME, PARAGRAPHS, RATE, VOICES, speech

KEYS = "123A456B789C*0#D"
#: More espeak-ng voices for the talk-off check only (the talk-down set keeps the five test voices):
#: female variants (f0 around 200 Hz: harmonics 200+ Hz apart), the Klatt synthesizer and accents.
TALK_OFF_EXTRA_VOICES = ("en-gb-x-rp", "en-029", "en-us+f2", "en-us+f4", "en-gb+f3", "en-us-nyc",
                         "en-gb-x-gbcwmd+m3", "en-us+klatt")
CLIP_SECONDS = 0.40
INTERFERERS = ("speech", "music")


# -- music ------------------------------------------------------------------------------------

def _note_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _voice(freq: np.ndarray, length: int, rolloff: float, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone following ``freq`` (Hz per sample): partial k at 1/k**rolloff, band-limited."""
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    out = np.zeros(length)
    top = float(freq.max())
    for k in range(1, 40):
        if k * top >= 0.45 * RATE:
            break
        out += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**rolloff
    return out


def _envelope(length: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    t = np.arange(length) / RATE
    env = np.where(t < attack, t / attack, sustain + (1 - sustain) * np.exp(-(t - attack) / decay))
    tail = int(release * RATE)
    if 0 < tail < length:
        env[-tail:] *= np.linspace(1, 0, tail)
    return env


@lru_cache(maxsize=4)
def music(seconds: float = 30.0, seed: int = 1977) -> np.ndarray:
    """A seeded synthetic band as 8 kHz float (peak ~0.5 full scale): pop progressions in random
    keys at 90-140 bpm, pad chords (sawtooth-like, 4 voices), a lead melody with vibrato and
    slides, a bass line, and drums (kick: falling sine; snare: noise + 190 Hz; hi-hat: high noise).
    """
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    out = np.zeros(total + RATE)
    position = 0
    progressions = ([0, 7, 9, 5], [0, 5, 7, 5], [9, 5, 0, 7], [0, 9, 5, 7], [2, 7, 0, 0])
    while position < total:
        bpm = rng.uniform(90, 140)
        beat = int(RATE * 60 / bpm)
        tonic = 48 + int(rng.integers(0, 12))
        scale = np.array([0, 2, 4, 5, 7, 9, 11])
        for degree in progressions[int(rng.integers(len(progressions)))]:
            bar = 4 * beat
            if position + bar > len(out):
                break
            root = tonic + degree
            minor = degree in (2, 4, 9)
            chord = [root, root + (3 if minor else 4), root + 7, root + 12]
            # pad: four sustained voices, slightly detuned, one octave up
            for note in chord:
                hz = _note_hz(note + 12) * (1 + rng.uniform(-0.003, 0.003))
                tone = _voice(np.full(bar, hz), bar, 1.0, rng) * _envelope(bar, 0.05, 0.4, 0.6, 0.1)
                out[position : position + bar] += 0.05 * tone
            # bass: root on every beat
            for b in range(4):
                seg = beat
                hz = _note_hz(root - 12 + (7 if b == 2 else 0))
                tone = _voice(np.full(seg, hz), seg, 1.5, rng) * _envelope(seg, 0.01, 0.15, 0.3, 0.05)
                out[position + b * beat : position + (b + 1) * beat] += 0.12 * tone
            # lead: eighth and quarter notes from the scale, two octaves up, with vibrato
            t = 0
            while t < bar:
                seg = min(beat // 2 * int(rng.integers(1, 3)), bar - t)
                note = tonic + 24 + scale[int(rng.integers(7))] + 12 * int(rng.integers(0, 2))
                n = np.arange(seg)
                hz = _note_hz(note) * (1 + 0.006 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * n / RATE))
                tone = _voice(hz, seg, 1.2, rng) * _envelope(seg, 0.02, 0.2, 0.7, 0.03)
                out[position + t : position + t + seg] += 0.08 * tone
                t += seg
            # drums
            for b in range(8):
                start = position + b * beat // 2
                if b % 4 == 0:  # kick
                    n = np.arange(int(0.15 * RATE))
                    sweep = 50 + 90 * np.exp(-n / (0.03 * RATE))
                    kick = np.sin(2 * np.pi * np.cumsum(sweep) / RATE) * np.exp(-n / (0.05 * RATE))
                    out[start : start + len(n)] += 0.4 * kick
                if b % 4 == 2:  # snare
                    n = np.arange(int(0.12 * RATE))
                    snare = (rng.normal(0, 0.5, len(n)) + np.sin(2 * np.pi * 190 * n / RATE)) * np.exp(-n / (0.04 * RATE))
                    out[start : start + len(n)] += 0.2 * snare
                n = np.arange(int(0.04 * RATE))  # hi-hat, every eighth
                hat = np.diff(rng.normal(0, 1, len(n) + 1)) * np.exp(-n / (0.01 * RATE))
                out[start : start + len(n)] += 0.05 * hat
            position += bar
    out = out[:total]
    return 0.5 * out / np.abs(out).max()


# -- speech -----------------------------------------------------------------------------------

def speech_stream() -> np.ndarray:
    """espeak-ng reading every paragraph in every test voice, as float."""
    return np.concatenate([speech(text, voice) for voice in VOICES for text in PARAGRAPHS]).astype(np.float64)


def interferer_stream(kind: str) -> np.ndarray:
    if kind == "speech":
        return speech_stream()
    if kind == "music":
        return music() * 32768.0
    raise ValueError(kind)


# -- the clips -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipSet:
    """Clips ``(N, samples)`` int16 after G.711, the key pressed in each, and how it was made."""

    interferer: str
    sir_db: float
    pcm: np.ndarray
    keys: str
    spans: tuple[tuple[int, int], ...]  # each key's first sample and length


def _frame_power(stream: np.ndarray) -> np.ndarray:
    usable = len(stream) // FRAME * FRAME
    return (stream[:usable].reshape(-1, FRAME) ** 2).mean(axis=1)


def active_level(stream: np.ndarray) -> float:
    """Mean power of the 20 ms frames of ``stream`` above -50 dBFS (its level while active)."""
    power = _frame_power(stream)
    active = power[power > (32768 * 10 ** (-50 / 20)) ** 2]
    return float(active.mean())


def key_tones(key: str, length: int, row_amp: float, col_amp: float, deviation: float,
              rng: np.random.Generator) -> np.ndarray:
    from ivr_plugins.tones import dtmf_frequencies

    row, col = dtmf_frequencies(key)
    n = np.arange(length)
    return sum(amp * np.sin(2 * np.pi * hz * (1 + deviation) * n / RATE + rng.uniform(0, 2 * np.pi))
               for hz, amp in ((row, row_amp), (col, col_amp)))


def build_clips(interferer: str, sir_db: float | None, count: int = 160, seed: int = 17) -> ClipSet:
    """``count`` key presses under ``interferer`` at ``sir_db`` (None: the key alone)."""
    rng = np.random.default_rng([seed, INTERFERERS.index(interferer), 0 if sir_db is None else int(sir_db * 10) + 1000])
    stream = interferer_stream(interferer)
    level = active_level(stream)
    length = int(CLIP_SECONDS * RATE)
    keys = "".join(KEYS[i % len(KEYS)] for i in range(count))
    clips = np.zeros((count, length))
    spans = []
    for i, key in enumerate(keys):
        on = int(rng.uniform(0.05, 0.10) * RATE)
        start = int(rng.uniform(0.14, 0.16) * RATE)
        row_dbfs = rng.uniform(-18, -8)
        twist = rng.uniform(-3, 3)
        row_amp = 32768 * 10 ** (row_dbfs / 20)
        col_amp = 32768 * 10 ** ((row_dbfs - twist) / 20)
        tones = key_tones(key, on, row_amp, col_amp, rng.uniform(-0.01, 0.01), rng)
        clips[i, start : start + on] = tones
        spans.append((start, on))
        if sir_db is None:
            continue
        key_power = (row_amp**2 + col_amp**2) / 2
        for _ in range(1000):  # a segment in which the interferer is active while the key sounds
            at = int(rng.integers(0, len(stream) - length))
            segment = stream[at : at + length]
            local = float(np.mean(segment[start : start + on] ** 2))
            if local >= level / 10:
                break
        clips[i] += segment * np.sqrt(key_power / local / 10 ** (sir_db / 10))
    pcm = np.clip(np.round(clips), -32768, 32767).astype(np.int16)
    return ClipSet(interferer, sir_db, g711.decode(g711.encode(pcm, "PCMU"), "PCMU").reshape(pcm.shape), keys,
                   tuple(spans))


def detect_batch(pcm: np.ndarray, plugin: object | None = None) -> list[str]:
    """Run the dtmf plugin on every row of ``pcm`` as its own call, all calls in one batch per tick."""
    if plugin is None:
        import ivr_plugins.dtmf as plugin
    rig = AudioRig(plugin, config={"plugins": {"dtmf": {"inband": "on"}}})
    calls = [rig.call(f"clip-{i}") for i in range(pcm.shape[0])]
    usable = pcm.shape[1] // FRAME * FRAME
    for start in range(0, usable, FRAME):
        rig.step(calls, np.ascontiguousarray(pcm[:, start : start + FRAME]))
    return ["".join(call.digits) for call in calls]


@dataclass(frozen=True)
class Score:
    right: int
    missed: int
    wrong: int

    @property
    def total(self) -> int:
        return self.right + self.missed + self.wrong

    @property
    def rate(self) -> float:
        return self.right / self.total


def score(clips: ClipSet, heard: list[str]) -> Score:
    right = sum(h == k for h, k in zip(heard, clips.keys))
    missed = sum(h == "" for h in heard)
    return Score(right, missed, len(heard) - right - missed)


def stream_false_digits(pcm: np.ndarray, plugin: object | None = None) -> str:
    """Digits reported on a long signal with no key in it (talk-off), fed as one call."""
    usable = len(pcm) // FRAME * FRAME
    return detect_batch(pcm[None, :usable], plugin)[0]


def music_talk_off_pcm(seconds: float = 30.0) -> np.ndarray:
    """Other music alone (another seed), -12 dBFS active level, through G.711: talk-off on music."""
    stream = music(seconds, seed=2024)
    stream = stream * 32768 * np.sqrt((32768 * 10 ** (-12 / 20)) ** 2 / active_level(stream * 32768))
    pcm = np.clip(np.round(stream), -32768, 32767).astype(np.int16)
    return g711.decode(g711.encode(pcm, "PCMU"), "PCMU")


def through_g711(pcm: np.ndarray) -> np.ndarray:
    """``pcm`` after a mu-law encode/decode round trip."""
    return g711.decode(g711.encode(pcm, "PCMU"), "PCMU")
