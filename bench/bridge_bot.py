"""The local echo bot of the bridge benchmark (bench/bridge.py), a process (or several) of its own:

    python -m bench.bridge_bot --port PORT --out FILE.npz [--reuse-port]

A measuring instrument first: at 100 calls it reads and answers 5,000 messages a second each way,
so its hot path has no task wake-up and no JSON parse. Its connections are ``websockets``' own
(handshake, framing, close) with one change of path (:class:`EchoConnection`): the frames of one
socket read are handled in the read callback itself, each arrival stamped with the time of that
read (the closest Python gets to the socket), and the echoes of that read leave in one ``write``.
With ``--reuse-port`` several processes listen on one port (``SO_REUSEPORT``: the kernel spreads
the connections), so the bot can use every core the server leaves free.

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
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from bench.bridge_tags import KIND_BURST, KIND_PROBE, SAMPLE_EVERY, make_frame, read_tag

__all__ = ["EchoConnection", "Measurements", "main"]

_PAYLOAD = '"payload": "'


class Measurements:
    """What one bot process measured (see the module doc); :meth:`save` writes it."""

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
    """Clear probe: every 2 s one second of tagged audio in one message, ``clear`` 0.4 s later."""
    try:
        await _burst_loop(ws, sid, index, stats)
    except ConnectionClosed:
        pass


async def _burst_loop(ws: ServerConnection, sid: str, index: int, stats: Measurements) -> None:
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
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            return
        counter += 1
        payload = base64.b64encode(make_frame(KIND_PROBE, index, counter)).decode()
        stats.probes_tag.append(KIND_PROBE << 48 | index << 32 | counter)
        stats.probes_sent.append(time.time())
        try:
            await ws.send('{"event": "media", "streamSid": "' + sid + '", "media": {"payload": "' + payload + '"}}')
        except ConnectionClosed:
            return


class EchoConnection(ServerConnection):
    """A server connection whose text frames go to :meth:`on_text` as they are parsed, in the
    read callback; echoes are gathered and written once per read (see the module doc)."""

    stats: Measurements
    clear_every = 10
    sid = ""
    record: list[int] | None = None
    extra: asyncio.Task | None = None  # the clear or latency probe of this call
    _arrived = 0.0
    _echoes: list[bytes] | None = None
    _sampled = 0  # sampled frames of this read, whose echo time is set once the echoes are written

    def data_received(self, data: bytes) -> None:
        self._arrived = time.time()
        self._echoes = []
        self._sampled = 0
        try:
            super().data_received(data)
        finally:
            echoes, self._echoes = self._echoes, None
            if echoes and self.protocol.state is State.OPEN:
                for echo in echoes:
                    self.protocol.send_text(echo)
                self.send_data()
            if self._sampled:
                now, echoed = time.time(), self.stats.echoed
                for i in range(len(echoed) - self._sampled, len(echoed)):
                    echoed[i] = now

    def process_event(self, event) -> None:
        if self.request is not None and isinstance(event, Frame) and event.opcode is Opcode.TEXT and event.fin:
            try:
                self.on_text(bytes(event.data).decode())
            except Exception as exc:  # never break the read path; counted
                print(f"bot: frame not handled: {exc!r}", flush=True)
            return
        super().process_event(event)

    def on_text(self, text: str) -> None:
        record = self.record
        at = text.find(_PAYLOAD) if record is not None else -1
        if at > 0:  # the bridge's media messages, read without a JSON parse (the bot's hot path)
            start = at + len(_PAYLOAD)
            payload = text[start:text.index('"', start)]
            tag = read_tag(base64.b64decode(payload))
            if tag is None:
                return
            counter = tag & 0xFFFFFFFF
            record[0] += 1
            if record[1] < 0:
                record[1] = counter
            record[2] = counter
            if self.extra is not None:
                return
            echo = ('{"event": "media", "streamSid": "' + self.sid + '", "media": {"payload": "'
                    + payload + '"}}').encode()
            if self._echoes is not None:
                self._echoes.append(echo)
            if counter % SAMPLE_EVERY == 0:
                stats = self.stats
                stats.tags.append(tag)
                stats.arrived.append(self._arrived)
                stats.echoed.append(0.0)  # set once this read's echoes are written
                self._sampled += 1
            return
        message = json.loads(text)
        if message.get("event") == "start":
            self.sid = message["streamSid"]
            caller = message["start"]["customParameters"].get("caller", "")
            index = int(caller[1:]) if caller[1:].isdigit() else -1
            self.record = self.stats.calls.setdefault(index, [0, -1, -1])
            every = self.clear_every
            if every and index % every == every - 1:
                self.extra = asyncio.get_running_loop().create_task(_bursts(self, self.sid, index, self.stats))
            elif every and index % every == every - 2:
                self.extra = asyncio.get_running_loop().create_task(_probes(self, self.sid, index, self.stats))


async def handle(ws: ServerConnection, stats: Measurements) -> None:
    """Count the connection and wait for its end (the frames are handled as they are read)."""
    stats.connections += 1
    try:
        await ws.wait_closed()
        if ws.close_code not in (1000, 1001, 1005):
            stats.closed_abnormally += 1
    finally:
        extra = getattr(ws, "extra", None)
        if extra is not None:
            extra.cancel()


async def run(port: int, out: str, clear_every: int, reuse_port: bool = False) -> None:
    stats = Measurements()

    class Connection(EchoConnection):
        pass

    Connection.stats = stats
    Connection.clear_every = clear_every
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with serve(lambda ws: handle(ws, stats), "127.0.0.1", port, compression=None, max_size=1 << 20,
                     create_connection=Connection, reuse_port=reuse_port or None):
        print("READY", flush=True)
        await stop.wait()
    stats.save(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, default=0, help="scheduling niceness of this process")
    parser.add_argument("--rt", type=int, default=0, help="SCHED_RR priority of this process (0: not real-time)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clear-every", type=int, default=10, help="every Nth call is a clear probe (0: none)")
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other bot processes")
    args = parser.parse_args(argv)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if args.rt:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(args.rt))
    asyncio.run(run(args.port, args.out, args.clear_every, args.reuse_port))


if __name__ == "__main__":
    main()
