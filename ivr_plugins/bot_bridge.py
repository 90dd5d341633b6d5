"""One call bridged to a bot's WebSocket: :class:`BotBridge`, the asyncio side of the ``bot``
action (``ivr_plugins.bot``), speaking :mod:`ivr_plugins.media_streams`.

No thread, and no task wake-up per message. The socket is ``websockets``' own asyncio client
connection (handshake, TLS, close handshake, keepalive), with two changes of path for speed
(:class:`BridgeConnection`): a whole text frame from the bot is handed to the bridge as it is
parsed, inside the event loop's read callback (so a frame that arrives before a media tick is
in the play-out buffer when that tick runs), and what we send is written by one
:class:`SendFlusher` callback per loop iteration for every bridge at once, one ``write`` per
bridge, instead of one sender task per bridge waking per message. One task per bridge remains,
idle: it waits for the end of the socket (and reads the rare fragmented message).

The media clock talks to the bridge without awaiting: :meth:`BotBridge.caller_frame` queues the
caller's 20 ms chunk (dropped and counted when the bot does not read fast enough: the socket
buffers ``WRITE_LIMIT`` bytes, then ``send_queue`` chunks wait) and :meth:`BotBridge.next_frame`
takes the next 20 ms of the bot's audio from the play-out buffer (bounded: audio past
``max_buffer`` seconds is dropped and counted). ``clear`` empties the buffer as soon as it is
read, so the next tick is already silent; marks are echoed from the tick that plays the last
byte before them.

Faults never raise out of here: every bad frame is counted in :attr:`BotBridge.stats`, its kind
logged once per bridge at WARNING (later ones at DEBUG) and summed up in one line at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from ivr.audio import FRAME_SAMPLES, SAMPLE_RATE
from ivr.call import CallContext
from ivr_plugins.media_streams import (
    BotClear,
    BotMark,
    BotMedia,
    BotProtocolError,
    BotSet,
    BotUnknown,
    MediaStreamEncoder,
    parse_bot_message,
)

__all__ = [
    "NORMAL_CLOSE_CODES",
    "BotBridge",
    "BotConnectError",
    "BridgeConnection",
    "BridgeSettings",
    "SendFlusher",
]

log = logging.getLogger(__name__)

# Twilio Media Streams carries 8 kHz µ-law, one byte a sample: the engine's frame as it is.
FRAME_BYTES = FRAME_SAMPLES
BYTES_PER_SECOND = SAMPLE_RATE
ULAW_SILENCE = b"\xff"
#: Close codes that mean the bot ended the session on purpose (1005: a close frame without a
#: code); 3000-4999 (registered and private codes) count too.
NORMAL_CLOSE_CODES = (1000, 1001, 1005)
#: Bytes the socket may buffer before a send waits (about 0.6 s of media messages): a bot that
#: reads slowly fills the send queue soon, where the drop-and-count policy applies.
WRITE_LIMIT = 16 * 1024
_MAX_VALUES_JSON = 16 * 1024
_MAX_MARKS = 1024


@dataclass(frozen=True)
class BridgeSettings:
    """Limits of one bridge (``plugins.bot`` in the configuration; these are the defaults)."""

    max_buffer: float = 60.0  # seconds of bot audio queued to play; more is dropped
    send_queue: int = 50  # caller chunks waiting for the socket (1 s); more are dropped
    max_message_bytes: int = 1 << 20  # a bigger frame from the bot closes the socket (1009)
    account_sid: str = "AC" + "0" * 32
    close_timeout: float = 2.0


class BotConnectError(Exception):
    """The bot could not be reached: refused, unreachable, timed out, TLS or HTTP refusal."""


class BridgeConnection(ClientConnection):
    """``websockets``' asyncio client connection, with whole data frames handed to
    :attr:`on_message` as they are parsed (in the loop's read callback) rather than queued for a
    task to ``recv()``, and :meth:`write_texts` to send without awaiting.

    A fragmented message (rare: Twilio-style bots send one frame per message) goes through the
    library's own reassembly and ``recv()``; from then on every message of this connection does,
    so that messages are never reordered. Flow control is the library's: :attr:`paused` is set
    while the socket buffers more than ``write_limit`` bytes, and :attr:`on_resume` is called
    when it drains.
    """

    on_message: Any = None  # Callable[[str | bytes], None] | None
    on_resume: Any = None  # Callable[[], None] | None
    _fragmented = False
    _close_timer: asyncio.TimerHandle | None = None

    def process_event(self, event: Any) -> None:
        """A parsed frame: a whole data frame goes to :attr:`on_message` at once; the rest
        (control frames, fragments, the handshake) to the library."""
        handler = self.on_message
        if handler is not None and not self._fragmented and isinstance(event, Frame) and self.response is not None:
            opcode = event.opcode
            if event.fin and opcode is Opcode.TEXT:
                try:
                    text: str | bytes = bytes(event.data).decode("utf-8")
                except UnicodeDecodeError:
                    text = bytes(event.data)  # counted as malformed by the bridge (not text)
                handler(text)
                return
            if event.fin and opcode is Opcode.BINARY:
                handler(bytes(event.data))
                return
            if opcode in (Opcode.TEXT, Opcode.BINARY):
                self._fragmented = True  # this message and every later one go through recv()
        super().process_event(event)

    @property
    def writable(self) -> bool:
        """The socket is open and takes more data now (not over its write limit)."""
        return self.protocol.state is State.OPEN and not self.paused and not self.transport.is_closing()

    def write_texts(self, texts: list[str]) -> None:
        """Frame ``texts`` as text messages and write them to the socket in one ``write``;
        the caller checks :attr:`writable` first."""
        protocol = self.protocol
        for text in texts:
            protocol.send_text(text.encode())
        data = b"".join(protocol.data_to_send())
        if data:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        """Bytes from the bot: parsed (and handled) by the library, then the close deadline."""
        super().data_received(data)
        # The bot started the closing handshake: the library waits for it to close TCP, and
        # enforces close_timeout only inside a send; we may send nothing more, so enforce it here.
        if self.close_deadline is not None and self._close_timer is None:
            self._close_timer = self.loop.call_at(self.close_deadline, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if not self.connection_lost_waiter.done():
            self.set_connection_exc(TimeoutError("timed out while closing connection"))
            self.transport.abort()

    def resume_writing(self) -> None:
        """The socket's buffer drained under the limit: what waited may be written."""
        super().resume_writing()
        if self.on_resume is not None:
            self.on_resume()


class SendFlusher:
    """Writes what bridges queued, for all of them at once, from one ``call_soon`` callback per
    loop iteration: the media tick queues one message per bridge, and the flush runs right after
    the tick has sent its RTP packets."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[int, BotBridge] = {}
        self.scheduled = False

    def request(self, bridge: BotBridge) -> None:
        """``bridge`` has something to write: flush it in the next loop iteration."""
        self.pending[id(bridge)] = bridge
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every pending bridge's queue (one ``write`` each)."""
        self.scheduled = False
        pending, self.pending = self.pending, {}
        for bridge in pending.values():
            try:
                bridge._pump()
            except Exception:  # one bridge's fault must not keep the others' audio back
                log.exception("call %s: writing to the bot failed", bridge.call.id)


_flushers: dict[asyncio.AbstractEventLoop, SendFlusher] = {}


def _flusher(loop: asyncio.AbstractEventLoop) -> SendFlusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        for old in [old for old in _flushers if old.is_closed()]:
            del _flushers[old]
        flusher = _flushers[loop] = SendFlusher(loop)
    return flusher


def _sid(prefix: str, seed: str | None = None) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest() if seed is not None else secrets.token_hex(16)
    return prefix + digest[:32]


class BotBridge:
    """The bridge of ``call`` to the bot at ``url`` (see the module doc).

    Plugins get it in the ``ivr_bot_*`` hooks and may read :attr:`stream_sid`, :attr:`url`,
    :attr:`stats`, :attr:`values` and call :meth:`send_event`.
    """

    def __init__(self, call: CallContext, url: str, *, parameters: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, connect_timeout: float = 1.0,
                 barge_in: frozenset[str] = frozenset(), ssl_context: ssl.SSLContext | None = None,
                 settings: BridgeSettings | None = None) -> None:
        self.call = call
        self.url = url
        self.parameters = dict(parameters or {})
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self.barge_in = barge_in
        self.ssl_context = ssl_context
        self.settings = settings or BridgeSettings()
        self.stream_sid = _sid("MZ")
        self.encoder = MediaStreamEncoder(self.stream_sid, _sid("CA", call.id), self.settings.account_sid)
        #: Counters: media_sent, media_dropped, audio_received_ms, audio_dropped_ms, audio_played_ms,
        #: audio_cleared_ms, marks, clears, barge_ins, dtmf_sent, malformed, bad_payload, unknown, too_big
        self.stats: dict[str, int] = dict.fromkeys(
            ("media_sent", "media_dropped", "audio_received_ms", "audio_dropped_ms", "audio_played_ms",
             "audio_cleared_ms", "marks", "clears", "barge_ins", "dtmf_sent", "malformed", "bad_payload",
             "unknown", "too_big", "foreign_stream"), 0)
        #: Values the bot handed back (``set`` events, a JSON close reason).
        self.values: dict[str, Any] = {}
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.error: str | None = None
        self.streaming = False  # True between start and stop: the media clock feeds the bridge
        self.started_at: float | None = None
        self._ws: BridgeConnection | None = None
        self._loop = asyncio.get_running_loop()
        self._flusher = _flusher(self._loop)
        #: Resolved with ``"done"`` (the bot closed normally) or ``"broken"`` when the socket ends.
        self.finished: asyncio.Future[str] = self._loop.create_future()
        self._closing = False
        self._tasks: list[asyncio.Task] = []
        # caller -> bot
        #: (text, or a media message's (numbers, µ-law, timestamp) to build, is media)
        self._out: deque[tuple[str | tuple[tuple[int, int], bytes, int], bool]] = deque()
        self._out_media = 0
        self._first_tick: int | None = None
        # bot -> caller
        self._play = bytearray()
        self._play_pos = 0
        self._queued_total = 0  # bytes ever queued (marks are positions on this count)
        self._played_total = 0
        self._marks: deque[tuple[int, str]] = deque()
        self._hold: str | None = None  # barge-in source while the bot's old audio is refused
        self._hold_until = 0.0
        self._warned: set[str] = set()

    # -- connecting and ending --------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket (handshake included) within ``connect_timeout``; raises
        :class:`BotConnectError` saying why it failed."""
        try:
            self._ws = await asyncio.wait_for(connect(
                self.url, additional_headers=self.headers or None, open_timeout=None, compression=None,
                max_size=self.settings.max_message_bytes, proxy=None, ssl=self.ssl_context,
                close_timeout=self.settings.close_timeout, write_limit=WRITE_LIMIT,
                user_agent_header=f"simplesip-ivr websockets/{websockets.__version__}",
                create_connection=BridgeConnection,
            ), self.connect_timeout)
        except TimeoutError:
            raise BotConnectError(f"no answer within {self.connect_timeout:g} s") from None
        except InvalidStatus as exc:
            raise BotConnectError(f"the bot refused the WebSocket upgrade: HTTP {exc.response.status_code}") from None
        except InvalidURI as exc:
            raise BotConnectError(f"bad URL: {exc}") from None
        except ssl.SSLCertVerificationError as exc:
            raise BotConnectError(f"TLS certificate not trusted: {exc.verify_message}") from None
        except (OSError, InvalidHandshake, ValueError) as exc:
            raise BotConnectError(f"{type(exc).__name__}: {exc}") from None
        assert isinstance(self._ws, BridgeConnection)
        self._ws.on_message = self._on_message
        self._ws.on_resume = self._request_flush

    def start(self, start_message: dict[str, Any]) -> None:
        """Send ``connected`` and ``start`` and let media flow both ways."""
        assert self._ws is not None, "start() before connect()"
        self._queue(self.encoder.connected())
        self._queue(self.encoder.dump(start_message))
        self.streaming = True
        self.started_at = time.monotonic()
        self._tasks = [self._loop.create_task(self._receiver(), name=f"bot-receive-{self.call.id}")]

    async def stop(self, timeout: float | None = None) -> None:
        """We end the stream: ``stop``, then a normal close; the tasks are gone on return."""
        if self._ws is None:
            return
        self.streaming = False
        if not self._closing and not self.finished.done():
            self._closing = True
            self._queue(self.encoder.stop())
            try:
                await asyncio.wait_for(self._flush_then_close(), timeout or self.settings.close_timeout)
            except (TimeoutError, ConnectionClosed, OSError):
                pass
        await self._cancel_tasks()
        if not self.finished.done():
            self.finished.set_result("stopped")

    def abort(self) -> None:
        """The call is gone and nobody will await :meth:`stop`: end in the background."""
        if self._ws is not None and not self._closing and not self.finished.done():
            self._loop.create_task(self.stop())

    async def _flush_then_close(self) -> None:
        assert self._ws is not None
        while self._out and not self.finished.done():
            self._pump()
            if self._out:
                await asyncio.sleep(0.005)
        await self._ws.close(1000, "call ended")

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- caller -> bot ----------------------------------------------------------------------

    def _queue(self, text: str | tuple[tuple[int, int], bytes, int], media: bool = False) -> bool:
        limit = self.settings.send_queue
        if media and self._out_media >= limit or len(self._out) >= 2 * limit + 64:
            return False
        self._out.append((text, media))
        self._out_media += media
        if len(self._out) == 1:
            self._flusher.request(self)
        return True

    def _request_flush(self) -> None:
        if self._out:
            self._flusher.request(self)

    def _pump(self) -> None:
        """Write everything queued, unless the socket is over its write limit (then the queue
        waits for it to drain: :meth:`BridgeConnection.resume_writing` asks for a flush)."""
        ws, out = self._ws, self._out
        if ws is None or not out or not ws.writable:
            return
        build = self.encoder.media_text
        texts = [item if isinstance(item, str) else build(*item) for item, _ in out]
        media = self._out_media
        out.clear()
        self._out_media = 0
        try:
            ws.write_texts(texts)
        except (OSError, RuntimeError) as exc:  # the receiver reports how the socket ended
            log.info("call %s: bot socket write failed: %r", self.call.id, exc)
            return
        self.stats["media_sent"] += media

    def caller_frame(self, ulaw: bytes, tick: int) -> None:
        """The caller's 20 ms (160 µ-law bytes) of media tick ``tick``; never blocks."""
        if not self.streaming:
            return
        if self._first_tick is None:
            self._first_tick = tick
        # numbered now, built into text by the flush after the tick (its RTP goes out first)
        if self._out_media < self.settings.send_queue and self._queue(
                (self.encoder.number_media(), ulaw, (tick - self._first_tick) * 20), media=True):
            return
        self.stats["media_dropped"] += 1
        self._warn("slow", "the bot does not read fast enough (slow consumer): dropping the caller's audio "
                   f"beyond {self.settings.send_queue} queued chunks")

    def dtmf(self, digit: str) -> None:
        if self.streaming and self._queue(self.encoder.dtmf(digit)):
            self.stats["dtmf_sent"] += 1

    def send_event(self, name: str, body: dict[str, Any] | None = None) -> bool:
        """Send an extension event ``{"event": name, ..., name: body}`` (for plugins); False when
        the bridge is not streaming or its queue is full."""
        return self.streaming and self._queue(self.encoder.event(name, body))

    # -- bot -> caller ----------------------------------------------------------------------

    @property
    def pending_audio(self) -> float:
        """Seconds of the bot's audio queued to play."""
        return (len(self._play) - self._play_pos) / BYTES_PER_SECOND

    def next_frame(self) -> bytes | None:
        """The next 20 ms of the bot's audio (fewer bytes at the end of a stretch), or None."""
        available = len(self._play) - self._play_pos
        if available <= 0:
            return None
        count = min(FRAME_BYTES, available)
        start = self._play_pos
        frame = bytes(self._play[start:start + count])
        self._play_pos = start + count
        self._played_total += count
        self.stats["audio_played_ms"] += count // 8
        if self._play_pos >= 1 << 16 and self._play_pos * 2 >= len(self._play):
            del self._play[:self._play_pos]  # compact now and then, not on every tick
            self._play_pos = 0
        marks = self._marks
        while marks and marks[0][0] <= self._played_total:
            self._echo_mark(marks.popleft()[1])
        return frame

    def _echo_mark(self, name: str) -> None:
        if self._queue(self.encoder.mark(name)):
            self.stats["marks"] += 1

    def _flush(self) -> int:
        """Empty the play-out buffer and echo every pending mark; return the bytes dropped."""
        dropped = len(self._play) - self._play_pos
        self._play.clear()
        self._play_pos = 0
        self._played_total = self._queued_total
        self.stats["audio_cleared_ms"] += dropped // 8
        while self._marks:
            self._echo_mark(self._marks.popleft()[1])
        return dropped

    def interrupt(self, source: str) -> None:
        """Local barge-in (``source``: ``speech`` or ``dtmf``): flush now, tell the bot, and
        refuse its audio until it sends ``clear`` or the caller stops (speech) / for 1 s (dtmf)."""
        if not self.streaming:
            return
        dropped = self._flush()
        self._hold = source
        self._hold_until = time.monotonic() + 1.0
        self.stats["barge_ins"] += 1
        self._queue(self.encoder.event("interrupt", {"source": source, "clearedMs": dropped // 8}))
        log.debug("call %s: barge-in (%s), %d ms of bot audio flushed", self.call.id, source, dropped // 8)

    def caller_stopped_speaking(self) -> None:
        if self._hold == "speech":
            self._hold = None

    def _holding(self) -> bool:
        if self._hold == "dtmf" and time.monotonic() >= self._hold_until:
            self._hold = None
        return self._hold is not None

    def _add_audio(self, payload: bytes) -> None:
        if self._holding():
            self.stats["audio_cleared_ms"] += len(payload) // 8
            return
        room = int(self.settings.max_buffer * BYTES_PER_SECOND) - (len(self._play) - self._play_pos)
        if len(payload) > room:
            self.stats["audio_dropped_ms"] += (len(payload) - max(room, 0)) // 8
            self._warn("overflow", f"the bot sends audio faster than it plays: over "
                       f"{self.settings.max_buffer:g} s queued, the excess is dropped")
            payload = payload[:max(room, 0)]
        self._play += payload
        self._queued_total += len(payload)
        self.stats["audio_received_ms"] += len(payload) // 8

    def _on_message(self, text: str | bytes) -> None:
        """A whole frame from the bot, in the loop's read callback: never raises."""
        try:
            self._handle(text)
        except Exception as exc:  # a bug of ours must not break the connection's read path
            log.error("call %s: bot bridge receive failed: %r", self.call.id, exc, exc_info=exc)

    async def _receiver(self) -> None:
        """Waits for the end of the socket (whole frames go to :meth:`_on_message` as they are
        read; this loop sees only fragmented messages) and resolves :attr:`finished`."""
        ws = self._ws
        assert ws is not None
        outcome = "broken"
        try:
            async for text in ws:
                self._handle(text)
            outcome = "done"
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug of ours must not leave the flow waiting forever
            log.error("call %s: bot bridge receive failed: %r", self.call.id, exc, exc_info=exc)
        self.streaming = False
        sent, received = ws.protocol.close_sent, ws.protocol.close_rcvd
        if received is None and sent is not None:
            self.close_code = int(sent.code)  # we failed the connection (1009: a giant frame)
        else:
            self.close_code = int(ws.close_code) if ws.close_code is not None else None
        self.close_reason = ws.close_reason or ""
        if self.close_code in NORMAL_CLOSE_CODES or 3000 <= (self.close_code or 0) <= 4999:
            outcome = "done"
        elif not self._closing:
            outcome = "broken"
        if self.close_code == 1009:
            self.stats["too_big"] += 1
            self._warn("too_big", f"the bot sent a frame over {self.settings.max_message_bytes} bytes; "
                       "the socket is closed (1009)")
            outcome = "broken"
        self._take_close_reason()
        if not self.finished.done():
            self.finished.set_result(outcome)

    def _take_close_reason(self) -> None:
        reason = self.close_reason.strip()
        if reason.startswith("{"):
            try:
                values = json.loads(reason)
            except json.JSONDecodeError:
                return
            if isinstance(values, dict):
                self.values.update(values)

    def _handle(self, text: str | bytes) -> None:
        try:
            event = parse_bot_message(text)
        except BotProtocolError as exc:
            self.stats[exc.kind] += 1
            self._warn(exc.what, f"frame from the bot ignored: {exc}")
            return
        if isinstance(event, BotMedia):
            self._add_audio(event.payload)
            return
        message = event.message if isinstance(event, BotUnknown) else None
        claimed = self._observe(event, text, message)
        if isinstance(event, BotMark):
            if len(self._marks) >= _MAX_MARKS:
                self._warn("marks", f"over {_MAX_MARKS} marks pending; more are dropped")
            elif self._queued_total <= self._played_total:
                self._echo_mark(event.name)
            else:
                self._marks.append((self._queued_total, event.name))
        elif isinstance(event, BotClear):
            self.stats["clears"] += 1
            self._flush()
            self._hold = None
        elif isinstance(event, BotSet):
            merged = {**self.values, **event.values}
            if len(json.dumps(merged, default=str)) > _MAX_VALUES_JSON:
                self._warn("values", f"values from the bot over {_MAX_VALUES_JSON} bytes; ignored")
            else:
                self.values = merged
        elif not claimed:
            self.stats["unknown"] += 1
            self._warn("unknown", f"unknown event {event.event[:40]!r} from the bot ignored")

    def _observe(self, event: Any, text: str | bytes, message: dict[str, Any] | None) -> bool:
        """Hand a non-media message to ``ivr_bot_message``; True when a plugin claimed it."""
        caller = getattr(self.call.hook, "ivr_bot_message", None)
        if caller is None or not caller.get_hookimpls():
            return False
        if message is None:
            try:
                message = json.loads(text)
            except (ValueError, TypeError):
                return False
        sid = message.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            self.stats["foreign_stream"] += 1
        try:
            answers = caller(call=self.call, bridge=self, message=message)
        except Exception:
            log.exception("call %s: a plugin raised in ivr_bot_message", self.call.id)
            return False
        return any(answer is True for answer in answers)

    # -- reporting --------------------------------------------------------------------------

    def _warn(self, kind: str, message: str) -> None:
        if kind in self._warned:
            log.debug("call %s: %s", self.call.id, message)
            return
        self._warned.add(kind)
        log.warning("call %s: bot %s: %s", self.call.id, self.url, message)

    def summary(self) -> str:
        """One line of the counters that are not zero."""
        return ", ".join(f"{key} {value}" for key, value in self.stats.items() if value)
