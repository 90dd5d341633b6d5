"""A Pipecat voice bot for SimpleSIP IVR's ``bot`` action, runnable offline (no API keys).

    pip install "pipecat-ai[websocket,silero]==1.14.0"
    python examples/pipecat_bot.py --port 8765          # then call a flow with `bot: {url: ws://127.0.0.1:8765/}`

It speaks the Twilio Media Streams protocol through Pipecat's ``TwilioFrameSerializer``, so the
same bot runs behind Twilio or behind the IVR. Offline it is a parrot: it beeps when the call
starts, listens (Pipecat's Silero VAD), and when the caller stops talking it says back what it
heard. Talk over it and it stops at once (an interruption: the serializer sends ``clear``).
Keys steer the flow after the bot: ``#`` hands back ``{"next": "transfer"}``, ``*``
``{"next": "voicemail"}``, and the bot hangs up (flows/bot.yaml routes on ``vars.bot.next``).

Where a real assistant goes: replace ``Parrot`` by speech-to-text, a context aggregator, an LLM
and text-to-speech, e.g. (services need their API keys)::

    stt = DeepgramSTTService(api_key=...)                 # caller audio -> TranscriptionFrame
    context = LLMContext([{"role": "system", "content": "You are a helpful phone agent."}])
    aggregators = LLMContextAggregatorPair(context)
    llm = OpenAILLMService(api_key=..., model=...)        # context -> text
    tts = CartesiaTTSService(api_key=..., voice_id=...)   # text -> OutputAudioRawFrame
    pipeline = Pipeline([transport.input(), stt, aggregators.user(), llm, tts,
                         transport.output(), aggregators.assistant()])

The server transport used here serves one call at a time (the next call is served when it
ends). For many calls at once, serve the same pipeline per connection with Pipecat's
``FastAPIWebsocketTransport`` (docs/voicebot.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
)
from pipecat.workers.runner import WorkerRunner

__all__ = ["CallSerializer", "Parrot", "main", "serve_one_call"]

RATE = 8000  # the phone's rate: no resampling anywhere
KEYS = {"#": "transfer", "*": "voicemail"}


class CallSerializer(TwilioFrameSerializer):
    """Twilio's serializer that learns the call's streamSid from the ``start`` message (the
    server transport is built before a call arrives). Auto hang-up is off: no Twilio account."""

    def __init__(self) -> None:
        super().__init__("", params=TwilioFrameSerializer.InputParams(auto_hang_up=False))

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if '"start"' in str(data)[:40]:
            message = json.loads(data)
            if message.get("event") == "start":
                self._stream_sid = message["streamSid"]
                logger.info(f"call from {message['start']['customParameters']}")
        return await super().deserialize(data)


def beep(hz: float = 880, seconds: float = 0.25) -> OutputAudioRawFrame:
    t = np.arange(int(seconds * RATE)) / RATE
    return OutputAudioRawFrame((6000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes(), RATE, 1)


class Parrot(FrameProcessor):
    """The offline stand-in for STT -> LLM -> TTS: each caller turn is said back."""

    def __init__(self, end_call) -> None:
        super().__init__()
        self.end_call = end_call
        self.turn = bytearray()
        self.listening = False
        self.greeted = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            if not self.greeted:
                self.greeted = True
                await self.push_frame(beep())
            if self.listening:
                self.turn += frame.audio
            return  # the caller's audio is not echoed as it comes
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self.listening = True
            self.turn.clear()
            await self.broadcast_interruption()  # the caller talks over the bot: stop at once
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self.listening = False
            await self.push_frame(OutputAudioRawFrame(bytes(self.turn), RATE, 1))  # "TTS" of the "reply"
        elif isinstance(frame, InputDTMFFrame) and frame.button.value in KEYS:
            await self.push_frame(OutputTransportMessageUrgentFrame(
                message={"event": "set", "set": {"next": KEYS[frame.button.value]}}))
            await self.end_call()
        await self.push_frame(frame, direction)


async def serve_one_call(port: int) -> None:
    transport = SingleClientWebsocketServerTransport(
        params=SingleClientWebsocketServerParams(
            serializer=CallSerializer(), audio_in_enabled=True, audio_out_enabled=True,
            audio_in_sample_rate=RATE, audio_out_sample_rate=RATE, allowed_origins=[]),
        host="127.0.0.1", port=port)
    worker: PipelineWorker | None = None

    async def end_call() -> None:
        assert worker is not None
        await worker.queue_frame(EndFrame())  # flushes what is queued, then closes the socket

    worker = PipelineWorker(
        Pipeline([transport.input(), VADProcessor(vad_analyzer=SileroVADAnalyzer(sample_rate=RATE)),
                  Parrot(end_call), transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE), idle_timeout_secs=None)

    @transport.event_handler("on_websocket_ready")
    async def on_ready(_transport) -> None:
        logger.info(f"waiting for a call on ws://127.0.0.1:{port}/")

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(_transport, _websocket) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


async def main(port: int, calls: int) -> None:
    served = 0
    while calls == 0 or served < calls:
        await serve_one_call(port)
        served += 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="An offline Pipecat bot for SimpleSIP IVR")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--calls", type=int, default=0, help="stop after this many calls (0: never)")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    asyncio.run(main(args.port, args.calls))
