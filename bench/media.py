"""Test media for the capacity benchmark: prompts, and what the callers send (for SIPp and the probes).

The caller's stream is u-law "speech" with an RFC 4733 key press every 3 s. SIPp sends it in one of
two ways (:func:`write_caller_media`):

* ``stream`` (the default): the speech from SIPp's ``rtp_stream`` (a pool of threads, one UDP
  socket) and each key press as a short pcap of telephone-events under a second SSRC, from the same
  address (the server takes side-SSRC events from its latched peer, as some gateways send them).
* ``pcap``: one pcap per call holding speech and keys under one SSRC, replayed by
  ``play_pcap_audio`` (:func:`caller_stream`, :func:`write_pcap`). SIPp 3.6 gives every playing pcap
  its own thread and raw UDP socket, and the kernel then walks every raw UDP socket for every UDP
  packet on the box (about 6 ns each): at 500 calls the load generator costs the whole box a
  third of a core and the server a late clock (docs/performance.md, "Round 5"). Kept to reproduce
  the earlier rounds.

The probe caller (:mod:`bench.probe`) sends the one-SSRC stream of :func:`caller_stream` itself.

Prompts: the menu prompt is a steady tone, so a receiver can tell from the energy of each frame
the moment the flow stops it after a digit (the reaction time); the acknowledgement is silence.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simplesip.wire import g711

RATE = 8000
FRAME = 160
FRAME_SECONDS = 0.02
PCMU = 0
TELEPHONE_EVENT = 101
EVENT_PACKETS = 5  # key press of 100 ms (5 x 20 ms), then the end packet three times (RFC 4733 §2.5.1.4)
EVENT_VOLUME = 10
DIGIT_CODES = {str(d): d for d in range(10)} | {"*": 10, "#": 11}


def tone(freq: float, seconds: float, dbfs: float = -12.0) -> np.ndarray:
    """A sine tone as int16 samples at 8 kHz."""
    t = np.arange(int(seconds * RATE)) / RATE
    amplitude = 32767 * 10 ** (dbfs / 20)
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    """8 kHz mono 16-bit WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.astype("<i2").tobytes())


def write_prompts(folder: Path, menu_seconds: float = 60.0) -> None:
    """The benchmark flows' prompts: ``bench_menu.wav`` (a 1 kHz tone) and ``bench_ack.wav``
    (0.3 s of silence)."""
    write_wav(folder / "bench_menu.wav", tone(1000.0, menu_seconds))
    write_wav(folder / "bench_ack.wav", np.zeros(int(0.3 * RATE), dtype=np.int16))


def caller_speech(seconds: float) -> np.ndarray:
    """What the caller says: espeak-ng speech when it is installed, else voiced bursts.

    Either way there is voice then silence, so the VAD plugin sees speech start and end.
    """
    if shutil.which("espeak-ng"):
        try:
            raw = subprocess.run(
                ["espeak-ng", "-s", "150", "--stdout",
                 "one two three four, this is a load test call, please hold"],
                check=True, capture_output=True, timeout=20).stdout
            speech = _wav_bytes_to_8k(raw)
            gap = np.zeros(RATE, dtype=np.int16)
            unit = np.concatenate([speech, gap])
            return np.resize(unit, int(seconds * RATE)).astype(np.int16)
        except (OSError, subprocess.SubprocessError, ValueError, wave.Error):
            pass
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 600), 1))
    gate = (t % 2.0) < 1.2  # 1.2 s of voice, 0.8 s of silence
    return (6000 * voiced * gate).astype(np.int16)


def _wav_bytes_to_8k(raw: bytes) -> np.ndarray:
    import io

    import soxr

    with wave.open(io.BytesIO(raw), "rb") as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return soxr.resample(samples, rate, RATE).astype(np.int16) if rate != RATE else samples


@dataclass(frozen=True)
class TimedPacket:
    """One RTP packet of the caller's stream and when (seconds from the start) it goes out."""

    at: float
    data: bytes
    digit_end: str | None = None  # set on the first end packet of a key press


def caller_stream(seconds: float, digit_times: list[tuple[float, str]], ssrc: int = 0x5157B3C4,
                  speech: np.ndarray | None = None) -> list[TimedPacket]:
    """The caller's RTP: u-law frames every 20 ms, with a key press at each ``(time, digit)``."""
    audio = speech if speech is not None else caller_speech(seconds)
    codes = g711.pcm_to_ulaw(np.resize(audio, int(seconds * RATE)).astype("<i2").tobytes())
    pending = sorted(digit_times)
    packets: list[TimedPacket] = []
    sequence, timestamp, frame_index = 1000, 160_000, 0
    total_frames = int(seconds / FRAME_SECONDS)
    marker = True
    while frame_index < total_frames:
        at = frame_index * FRAME_SECONDS
        if pending and at >= pending[0][0]:
            _, digit = pending.pop(0)
            packets += key_press(digit, at, sequence, timestamp, ssrc)
            sequence = (sequence + EVENT_PACKETS + 3) & 0xFFFF
            frame_index += EVENT_PACKETS + 1
            timestamp = (timestamp + FRAME * (EVENT_PACKETS + 1)) & 0xFFFFFFFF
            marker = True
            continue
        payload = codes[frame_index * FRAME:(frame_index + 1) * FRAME]
        packets.append(TimedPacket(at, _rtp_header(marker, PCMU, sequence, timestamp, ssrc) + payload))
        marker = False
        sequence = (sequence + 1) & 0xFFFF
        timestamp = (timestamp + FRAME) & 0xFFFFFFFF
        frame_index += 1
    return packets


def key_press(digit: str, at: float, sequence: int, timestamp: int, ssrc: int) -> list[TimedPacket]:
    """The telephone-event packets of one 100 ms key press starting at ``at`` seconds: one
    timestamp, a marker on the first, the end packet three times (RFC 4733 §2.5.1.4); they use
    ``EVENT_PACKETS + 3`` sequence numbers from ``sequence``."""
    packets = []
    for n in range(EVENT_PACKETS + 3):
        ended = n >= EVENT_PACKETS
        duration = FRAME * min(n + 1, EVENT_PACKETS)
        payload = struct.pack("!BBH", DIGIT_CODES[digit], (0x80 if ended else 0) | EVENT_VOLUME, duration)
        header = _rtp_header(n == 0, TELEPHONE_EVENT, (sequence + n) & 0xFFFF, timestamp, ssrc)
        # The repeated end packets go out together at the end time, as most senders do.
        when = at + min(n, EVENT_PACKETS) * FRAME_SECONDS
        packets.append(TimedPacket(when, header + payload, digit if n == EVENT_PACKETS else None))
    return packets


def _rtp_header(marker: bool, payload_type: int, sequence: int, timestamp: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)


def write_pcap(path: Path, packets: list[TimedPacket], src_port: int = 6000, dst_port: int = 6002) -> None:
    """A libpcap file (Ethernet/IPv4/UDP) of ``packets`` that SIPp's ``play_pcap_audio`` replays
    with the recorded timing (it keeps the RTP headers and rewrites addresses and ports)."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    base = 1_700_000_000.0
    for packet in packets:
        udp_len = 8 + len(packet.data)
        ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, 17, 0,
                                bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        ip_header = ip_header[:10] + struct.pack("!H", _ip_checksum(ip_header)) + ip_header[12:]
        frame = (b"\x00" * 12 + b"\x08\x00" + ip_header
                 + struct.pack("!HHHH", src_port, dst_port, udp_len, 0) + packet.data)
        stamp = base + packet.at
        seconds = int(stamp)
        out += struct.pack("<IIII", seconds, int(round((stamp - seconds) * 1e6)), len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def digit_schedule(seconds: float, first: float = 2.0, every: float = 3.0) -> list[tuple[float, str]]:
    """A key press every ``every`` seconds from ``first`` on, cycling 1..9, ending 1 s before the end."""
    times: list[tuple[float, str]] = []
    at, n = first, 0
    while at < seconds - 1.0:
        times.append((at, str(n % 9 + 1)))
        at += every
        n += 1
    return times


CALLER_MEDIA_MODES = ("stream", "pcap")
#: The SSRC of the key presses in ``stream`` mode (SIPp's rtp_stream numbers its own from 0xCA110000).
KEYS_SSRC = 0x4B455953


@dataclass
class CallerMedia:
    """What SIPp sends on every call, written into a run's folder by :func:`write_caller_media`."""

    audio: Path | None  # raw u-law that SIPp's rtp_stream loops (``stream`` mode)
    plays: list[tuple[float, Path]]  # (seconds into the call, pcap) for play_pcap_audio
    packets_per_call: int  # RTP packets a call of the hold sends (loss when the server counts none)


def write_caller_media(folder: Path, hold: float, mode: str = "stream") -> CallerMedia:
    """Write the caller's media for calls of ``hold`` seconds (see the module docstring)."""
    schedule = digit_schedule(hold)
    if mode == "pcap":
        stream = caller_stream(hold, schedule)
        path = folder / f"caller_{int(hold)}s.pcap"
        write_pcap(path, stream)
        return CallerMedia(None, [(0.0, path)], len(stream))
    if mode != "stream":
        raise ValueError(f"caller media is one of {CALLER_MEDIA_MODES}, not {mode!r}")
    audio = folder / "caller.ulaw"
    audio.write_bytes(g711.pcm_to_ulaw(caller_speech(hold).astype("<i2").tobytes()))
    plays, sequence = [], 1000
    for number, (at, digit) in enumerate(schedule, 1):
        # The timestamp follows the call's time, so each press is a new event to the receiver.
        packets = key_press(digit, 0.0, sequence, int(at * RATE), KEYS_SSRC)
        path = folder / f"key_{number:03d}.pcap"
        write_pcap(path, packets)
        plays.append((at, path))
        sequence += len(packets)
    frames = int(hold / FRAME_SECONDS)
    return CallerMedia(audio, plays, frames + len(schedule) * (EVENT_PACKETS + 3))
