"""The baseline: pyVoIP 1.6.8 as an auto-answer server that plays the benchmark prompt.

    python -m bench.baseline_pyvoip --sip-port 5080 --peer-port 5070 --rtp-range 30000-34000 \
        --prompt bench/flows/prompts/bench_menu.wav

Each call is answered, hears the menu prompt (the same 1 kHz tone as ``bench.yaml``) and, on a
key, 0.3 s of silence and the prompt again: the same behaviour as the benchmark flow, written
the way pyVoIP's documentation answers calls (one callback thread per call).

pyVoIP 1.6.8's ``VoIPPhone.start()`` registers with its ``server`` and gives up without an
answer; the benchmark has no registrar, so registration is skipped (``SIPClient.register``
replaced by a no-op on this instance). pyVoIP also sends every SIP message to ``server:port``
(not to the Via of the request), so the calling SIPp must listen on ``--peer-port``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import wave

import numpy as np

log = logging.getLogger("bench.baseline_pyvoip")

ACK_SILENCE_SECONDS = 0.3


def load_prompt_u8(path: str) -> bytes:
    """The prompt as pyVoIP wants audio: 8 kHz, 8-bit unsigned linear PCM."""
    with wave.open(path, "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return ((samples.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()


def make_answerer(prompt: bytes):
    """The per-call callback: answer, play, and restart the prompt after each key."""
    from pyVoIP.RTP import RTPPacketManager
    from pyVoIP.VoIP import CallState

    def answer(call) -> None:  # noqa: ANN001 - pyVoIP's VoIPCall
        try:
            call.answer()
            call.write_audio(prompt)
            while call.state == CallState.ANSWERED:
                if call.get_dtmf():
                    for client in call.RTPClients:  # drop the rest of the prompt: silence
                        client.pmout = RTPPacketManager()
                    time.sleep(ACK_SILENCE_SECONDS)
                    call.write_audio(prompt)
                time.sleep(0.02)
        except Exception as exc:  # a call that breaks must not stop the others
            log.info("call ended with %r", exc)

    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--peer-port", type=int, required=True, help="where SIPp listens")
    parser.add_argument("--rtp-range", default="30000-34000")
    parser.add_argument("--prompt", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from pyVoIP.VoIP import VoIPPhone

    low, high = (int(v) for v in args.rtp_range.split("-"))
    phone = VoIPPhone("127.0.0.1", args.peer_port, "bench", "unused", myIP="127.0.0.1",
                      callCallback=make_answerer(load_prompt_u8(args.prompt)), sipPort=args.sip_port,
                      rtpPortLow=low, rtpPortHigh=high)
    phone.sip.register = lambda: True  # no registrar in the benchmark (see the module docstring)
    phone.start()
    log.info("baseline ready: pyVoIP on 127.0.0.1:%d, RTP %d-%d", args.sip_port, low, high)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        phone.stop()
    return 0


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # the harness stops us with SIGTERM: leave through phone.stop()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sys.exit(main())
