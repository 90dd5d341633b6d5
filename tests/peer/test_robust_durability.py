"""Durability of recordings: SIGTERM during a recording leaves a valid WAV holding every frame
received; after SIGKILL the data written so far is recovered on the next start."""

from __future__ import annotations

import signal
import time
import wave
from pathlib import Path

from tests.helpers.peers import SippRunner
from tests.helpers.robust_server import RECORD_FLOW, IvrServeProcess


def _wav_seconds(path: Path) -> float:
    """Length by the header; the header must agree with the file size (a valid WAV)."""
    with wave.open(str(path)) as wav:
        frames = wav.getnframes()
        assert wav.getsampwidth() == 2 and wav.getframerate() == 8000
        data_bytes = frames * wav.getnchannels() * 2
    assert path.stat().st_size >= data_bytes + 44
    assert path.stat().st_size - data_bytes <= 44 + 256, "header sizes lag behind the data"
    return frames / 8000


def _one_recording(folder: Path) -> Path:
    files = sorted(folder.glob("*.wav"))
    assert len(files) == 1, files
    return files[0]


def test_sigterm_during_recording_keeps_every_frame(tmp_path: Path) -> None:
    with IvrServeProcess(tmp_path / "ivr", RECORD_FLOW, "drain_timeout: 0\n") as server:
        with SippRunner(tmp_path / "sipp", "uac_pcap", remote=server.address, service="ivr",
                        extra=["-timeout", "15s"]) as sipp:
            time.sleep(4.0)
            answered_for = 4.0
            server.signal(signal.SIGTERM)
            assert server.proc.wait(10) == 0, server.log()[-3000:]
            sipp.stop()
        seconds = _wav_seconds(_one_recording(server.recordings))
    # Every 20 ms frame received until the signal is in the file (less the jitter-buffer delay
    # and call set-up), nothing is lost in a half-written header.
    assert seconds >= answered_for - 0.8, seconds


def test_sigkill_during_recording_is_repaired_on_next_start(tmp_path: Path) -> None:
    folder = tmp_path / "ivr"
    with IvrServeProcess(folder, RECORD_FLOW) as server:
        with SippRunner(tmp_path / "sipp", "uac_pcap", remote=server.address, service="ivr",
                        extra=["-timeout", "15s"]) as sipp:
            time.sleep(4.0)
            server.signal(signal.SIGKILL)
            server.proc.wait(5)
            sipp.stop()
        path = _one_recording(server.recordings)
        written = path.stat().st_size - 44
    assert written >= 2 * 8000 * 2, "at least 2 s of audio reached the disk before the kill"
    # The next start repairs whatever the crash left (the header may lag by up to a second).
    with IvrServeProcess(folder, RECORD_FLOW):
        pass
    seconds = _wav_seconds(path)
    assert abs(seconds * 16000 - written) <= 2, (seconds, written)
