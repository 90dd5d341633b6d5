"""Pipecat bots for the bridge's end-to-end tests, each a process of its own:

    python -m tests.bots.pipecat_bots echo|tone|talker --port PORT [--seconds S]

Each is a Pipecat pipeline behind Pipecat's own WebSocket server transport
(``SingleClientWebsocketServerTransport``) with its ``TwilioFrameSerializer`` (auto hang-up off:
no Twilio account, no network service), at 8 kHz both ways:

* ``echo``: says back what it hears, then ends the session after ``--seconds``;
* ``tone``: answers each DTMF key with one second of a tone of ``400 + 100 * key`` Hz, and
  ends the session one second after the tone;
* ``talker``: talks (a 440 Hz tone standing for TTS, ``--seconds`` long) from the moment the
  call connects; Pipecat's Silero VAD hears the caller start speaking, the bot interrupts itself
  (``InterruptionFrame``: the serializer sends ``clear``), hands ``{"interrupted": true}`` back
  to the flow with a ``set`` message and ends the session a second later.

Prints ``READY`` once the server listens. Like a bot written for Twilio, it learns the stream's
``streamSid`` from the ``start`` message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import numpy as np
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
)
from pipecat.workers.runner import WorkerRunner

from examples.pipecat_bot import (
    CallSerializer,  # the example's serializer: learns the streamSid
)

__all__ = ["main"]

RATE = 8000


def tone(hz: float, seconds: float, level: float = 8000.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def audio_frames(pcm: bytes, chunk_ms: int = 20) -> list[OutputAudioRawFrame]:
    step = RATE * chunk_ms // 1000 * 2
    return [OutputAudioRawFrame(pcm[i:i + step], RATE, 1) for i in range(0, len(pcm), step)]


class Echo(FrameProcessor):
    """What comes in goes out."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(OutputAudioRawFrame(frame.audio, frame.sample_rate, frame.num_channels))
        else:
            await self.push_frame(frame, direction)


class ToneOnKey(FrameProcessor):
    """A tone per key press; the session ends a second after it."""

    def __init__(self, worker_ref: list) -> None:
        super().__init__()
        self.worker_ref = worker_ref

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame):
            key = frame.button.value
            hz = 400 + 100 * int(key) if key.isdigit() else 1500
            logger.info(f"key {key}: tone {hz} Hz")
            for out in audio_frames(tone(hz, 1.0)):
                await self.push_frame(out)
            asyncio.get_running_loop().call_later(2.0, lambda: asyncio.ensure_future(
                self.worker_ref[0].queue_frame(EndFrame())))
        else:
            await self.push_frame(frame, direction)


class Talker(FrameProcessor):
    """Talks from the start; stops for good when the caller starts speaking."""

    def __init__(self, seconds: float, worker_ref: list) -> None:
        super().__init__()
        self.seconds = seconds
        self.worker_ref = worker_ref
        self.interrupted = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            return
        if isinstance(frame, InputAudioRawFrame) and not getattr(self, "talking", False):
            self.talking = True  # the first audio from the call: start talking
            for out in audio_frames(tone(440, self.seconds)):
                await self.push_frame(out)
        elif isinstance(frame, VADUserStartedSpeakingFrame) and not self.interrupted:
            self.interrupted = True
            logger.info("caller speaks: interrupting")
            await self.broadcast_interruption()
            await self.push_frame(OutputTransportMessageUrgentFrame(
                message={"event": "set", "streamSid": "", "set": {"interrupted": True}}))
            asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(
                self.worker_ref[0].queue_frame(EndFrame())))


async def run(kind: str, port: int, seconds: float) -> None:
    transport = SingleClientWebsocketServerTransport(
        params=SingleClientWebsocketServerParams(
            serializer=CallSerializer(), audio_in_enabled=True, audio_out_enabled=True,
            audio_in_sample_rate=RATE, audio_out_sample_rate=RATE, allowed_origins=[]),
        host="127.0.0.1", port=port)
    worker_ref: list = []
    if kind == "echo":
        middle: list[FrameProcessor] = [Echo()]
    elif kind == "tone":
        middle = [ToneOnKey(worker_ref)]
    else:
        middle = [VADProcessor(vad_analyzer=SileroVADAnalyzer(sample_rate=RATE)), Talker(seconds, worker_ref)]
    worker = PipelineWorker(
        Pipeline([transport.input(), *middle, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        idle_timeout_secs=None)
    worker_ref.append(worker)

    @transport.event_handler("on_websocket_ready")
    async def on_ready(_transport):
        print("READY", flush=True)

    @transport.event_handler("on_client_connected")
    async def on_connected(_transport, _websocket):
        if kind == "echo":
            asyncio.get_running_loop().call_later(seconds, lambda: asyncio.ensure_future(
                worker.queue_frame(EndFrame())))

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(_transport, _websocket):
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("echo", "tone", "talker"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    asyncio.run(run(args.kind, args.port, args.seconds))


if __name__ == "__main__":
    main()
