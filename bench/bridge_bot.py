"""The local echo bot of the bridge benchmark (bench/bridge.py), a process of its own:

    python -m bench.bridge_bot --port PORT --out FILE.npz

A ``websockets`` server speaking Twilio Media Streams. Each call is told its index by the
``start`` message's custom parameter ``caller`` (``c<index>``, the SIP From user). Echo calls say
back every ``media`` payload at once; on *clear probe* calls (index one less than a multiple of
``--clear-every``) the bot instead sends, every 2 s, one second of tagged audio in one message,
then ``clear`` 0.4 s later; on *latency probe* calls (two less) one tagged frame every 200 ms. On SIGTERM it writes what it measured to ``--out``: for sampled
tagged frames the time they arrived and the time their echo left (``time.time()``, comparable
with the caller's kernel timestamps), per call the frames received and the first and last
frame counters seen, and the time of every ``clear``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import time
from array import array

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.bridge_tags import KIND_BURST, KIND_PROBE, SAMPLE_EVERY, make_frame, read_tag

__all__ = ["main"]

_PAYLOAD = '"payload": "'


class Measurements:
    def __init__(self) -> None:
        self.tags = array("q")
        self.arrived = array("d")
        self.echoed = array("d")
        self.probes_tag = array("q")
        self.probes_sent = array("d")
        self.clears_tag = array("q")  # call index << 32 | burst number
        self.clears_at = array("d")
        self.calls: dict[int, list[int]] = {}  # index -> [frames received, first counter, last counter]
        self.connections = 0
        self.closed_abnormally = 0

    def save(self, path: str) -> None:
        calls = np.array([[index, *value] for index, value in sorted(self.calls.items())], dtype=np.int64)
        np.savez(path, tags=np.frombuffer(self.tags, np.int64), arrived=np.frombuffer(self.arrived),
                 echoed=np.frombuffer(self.echoed), clears_tag=np.frombuffer(self.clears_tag, np.int64),
                 clears_at=np.frombuffer(self.clears_at), calls=calls.reshape(-1, 4),
                 probes_tag=np.frombuffer(self.probes_tag, np.int64), probes_sent=np.frombuffer(self.probes_sent),
                 connections=self.connections, closed_abnormally=self.closed_abnormally)


async def _bursts(ws: ServerConnection, sid: str, index: int, stats: Measurements) -> None:
    burst = 0
    while True:
        await asyncio.sleep(1.6)
        burst += 1
        frames = b"".join(make_frame(KIND_BURST, index, burst * 1000 + i) for i in range(50))
        await ws.send(json.dumps({"event": "media", "streamSid": sid,
                                  "media": {"payload": base64.b64encode(frames).decode()}}))
        await asyncio.sleep(0.4)
        stats.clears_tag.append(index << 32 | burst)
        stats.clears_at.append(time.time())
        await ws.send(json.dumps({"event": "clear", "streamSid": sid}))


async def _probes(ws: ServerConnection, sid: str, index: int, stats: Measurements) -> None:
    """One tagged frame every 200 ms, nothing else: it finds the play-out queue empty, so its
    time to the caller is the bridge's own WS -> RTP latency."""
    counter = 0
    while True:
        await asyncio.sleep(0.2)
        counter += 1
        payload = base64.b64encode(make_frame(KIND_PROBE, index, counter)).decode()
        stats.probes_tag.append(KIND_PROBE << 48 | index << 32 | counter)
        stats.probes_sent.append(time.time())
        await ws.send('{"event": "media", "streamSid": "' + sid + '", "media": {"payload": "' + payload + '"}}')


async def handle(ws: ServerConnection, stats: Measurements, clear_every: int) -> None:
    stats.connections += 1
    sid, index, bursts = "", -1, None
    record: list[int] | None = None
    try:
        async for text in ws:
            arrived = time.time()
            at = text.find(_PAYLOAD) if record is not None else -1
            if at > 0:  # the bridge's media messages, read without a JSON parse (the bot's hot path)
                start = at + len(_PAYLOAD)
                payload = text[start:text.index('"', start)]
                message, event = None, "media"
            else:
                message = json.loads(text)
                event = message.get("event")
            if event == "media" and record is not None:
                if message is not None:
                    payload = message["media"]["payload"]
                tag = read_tag(base64.b64decode(payload))
                if tag is None:
                    continue
                counter = tag & 0xFFFFFFFF
                record[0] += 1
                if record[1] < 0:
                    record[1] = counter
                record[2] = counter
                if bursts is not None:
                    continue
                await ws.send('{"event": "media", "streamSid": "' + sid + '", "media": {"payload": "'
                              + payload + '"}}')
                if counter % SAMPLE_EVERY == 0:
                    stats.tags.append(tag)
                    stats.arrived.append(arrived)
                    stats.echoed.append(time.time())
            elif event == "start":
                sid = message["streamSid"]
                caller = message["start"]["customParameters"].get("caller", "")
                index = int(caller[1:]) if caller[1:].isdigit() else -1
                record = stats.calls.setdefault(index, [0, -1, -1])
                if clear_every and index % clear_every == clear_every - 1:
                    bursts = asyncio.create_task(_bursts(ws, sid, index, stats))
                elif clear_every and index % clear_every == clear_every - 2:
                    bursts = asyncio.create_task(_probes(ws, sid, index, stats))
    except ConnectionClosed:
        stats.closed_abnormally += 1
    finally:
        if bursts is not None:
            bursts.cancel()


async def run(port: int, out: str, clear_every: int) -> None:
    stats = Measurements()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with serve(lambda ws: handle(ws, stats, clear_every), "127.0.0.1", port, compression=None,
                     max_size=1 << 20):
        print("READY", flush=True)
        await stop.wait()
    stats.save(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, default=0, help="scheduling niceness of this process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clear-every", type=int, default=10, help="every Nth call is a clear probe (0: none)")
    args = parser.parse_args(argv)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    asyncio.run(run(args.port, args.out, args.clear_every))


if __name__ == "__main__":
    main()
