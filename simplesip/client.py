"""``SimpleSIPClient``: the seed's synchronous one-call API on top of the asyncio Endpoint.

One event loop runs in one background thread (started by :meth:`SimpleSIPClient.connect`, ended
by :meth:`SimpleSIPClient.disconnect`); every public method hands its work to that loop and waits
for the result, so the class is safe to use from any thread. Callbacks run on the loop thread:
keep them short (queue the work elsewhere) or they delay the audio of the call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, Callable, Coroutine

from simplesip.aio.addresses import route_source
from simplesip.aio.call import Call, CallState
from simplesip.aio.endpoint import Endpoint
from simplesip.aio.endpoint_config import EndpointConfig
from simplesip.errors import AuthenticationError, CallError, ConnectionError
from simplesip.wire import g711

log = logging.getLogger(__name__)

__all__ = ["SimpleSIPClient"]

# What make_call accepts: an extension or number, user@host[:port], or a sip:/sips:/tel: URI.
_NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")
_USER_AT_HOST = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+@[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?(;[^\s]*)?$")
_URI = re.compile(r"^(sips?:([^\s@]+@)?[A-Za-z0-9.\-\[\]]+(:\d{1,5})?(;[^\s]*)?|tel:\+?[0-9\-().*#]+)$",
                  re.IGNORECASE)

AudioCallback = Callable[[bytes, str], Any]
IncomingCallback = Callable[[str, dict[str, str]], "bool | int | None"]


class SimpleSIPClient:
    """A SIP phone with one call at a time: register, call, answer, stream audio, DTMF.

    ``server``/``port`` name the registrar (and the domain extensions are dialled in);
    ``local_host`` defaults to the address that routes to the server; ``local_port`` 0 picks
    a free port. ``transport`` is ``"udp"``, ``"tcp"`` or ``"tls"``: registration and calls go
    over it (for TLS the default port 5060 means 5061).

    SIP over TLS (``transport="tls"``): the server's certificate is verified against
    ``ca_file`` (PEM; None: the system's CAs) and must name the host dialled (``server``, or
    the host of a URI given to :meth:`make_call`); ``verify=False`` accepts any certificate
    (a lab only: anyone in the path can then read the calls' SIP and their SRTP keys).
    ``client_cert``/``client_key`` (PEM) present our certificate to servers that authenticate
    trunks by mutual TLS.

    ``srtp``: the calls' media encryption (SRTP with SDES keys, RFC 3711/4568), for the calls we
    make and the ones we take: ``"off"`` (the default), ``"optional"`` (offer SRTP, take it
    whenever the peer does) or ``"mandatory"`` (offer ``RTP/SAVP``; an answer or an incoming
    offer without SRTP fails the call with 488). The keys travel in the SDP: use it with
    ``transport="tls"``. ``srtp_suites`` narrows or orders the suites
    (``AES_CM_128_HMAC_SHA1_80``, ``AES_CM_128_HMAC_SHA1_32``).

    Extra keyword options go to :class:`~simplesip.aio.endpoint.EndpointConfig`.
    """

    def __init__(self, username: str, password: str, server: str, port: int = 5060, *,
                 local_host: str | None = None, local_port: int = 0, transport: str = "udp",
                 timeout: float = 10.0, ca_file: str | None = None, verify: bool = True,
                 client_cert: str | None = None, client_key: str | None = None,
                 srtp: str = "off", **endpoint_options: Any):
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport must be 'udp', 'tcp' or 'tls', not {transport!r}")
        if client_key and not client_cert:
            raise ValueError("client_key needs client_cert")
        self.username, self.password = username, password
        self.server, self.port = server, port
        self.timeout = timeout
        tls = {"tls_ca_file": ca_file, "tls_verify": verify, "tls_client_cert_file": client_cert,
               "tls_client_key_file": client_key}
        if transport != "tls" and any(v for k, v in tls.items() if k != "tls_verify"):
            raise ValueError("ca_file, client_cert and client_key are for transport='tls'")
        if srtp != "off" and transport != "tls":
            log.warning("SRTP over %s signalling: its keys travel in clear in the SDP", transport.upper())
        route_port = 5061 if transport == "tls" and port == 5060 else port
        self.config = EndpointConfig(
            local_host=local_host or route_source(server, route_port) or "127.0.0.1", sip_port=local_port,
            transports=tuple(dict.fromkeys((transport, "udp", "tcp"))), username=username,
            password=password, server=server, server_port=port, transport=transport,
            register_timeout=min(timeout, 32.0), srtp=srtp, **tls, **endpoint_options)
        self._endpoint: Endpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._call: Call | None = None
        self._audio_callback: AudioCallback | None = None
        self._audio_format = "pcmu"
        self._dtmf_callback: Callable[[str], Any] | None = None
        self._incoming_callback: IncomingCallback | None = None

    # --- state -----------------------------------------------------------------------------------

    @property
    def call_state(self) -> CallState:
        """The current call's state; IDLE when there is none."""
        call = self._call
        return call.state if call is not None and call.is_live else CallState.IDLE

    @property
    def running(self) -> bool:
        """True between a successful connect() and disconnect()."""
        return self._endpoint is not None and self._thread is not None and self._thread.is_alive()

    @property
    def local_address(self) -> tuple[str, int] | None:
        """Where our SIP transports listen (after connect())."""
        return self._endpoint.local_address if self._endpoint is not None else None

    # --- connection ------------------------------------------------------------------------------

    def connect(self, register: bool = True) -> bool:
        """Start the stack and register with the server. True when registered (or, with
        ``register=False``, listening). Raises ConnectionError when the server cannot be reached
        and AuthenticationError when it refuses the credentials."""
        if self.running:
            return True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simplesip-client",
                                        daemon=True)
        self._thread.start()
        self._endpoint = Endpoint(self.config)
        self._endpoint.on_incoming_call = self._on_incoming_call
        try:
            self._run(self._endpoint.start())
            if register:
                self._run(self._endpoint.register(), self.config.register_timeout + 2)
        except (ConnectionError, AuthenticationError):
            self._shutdown()
            raise
        except OSError as exc:
            self._shutdown()
            raise ConnectionError(str(exc)) from exc
        return True

    def disconnect(self) -> None:
        """Hang up, unregister, release every socket and the background thread."""
        if self._endpoint is not None and self._loop is not None and self._thread is not None:
            try:
                self._run(self._endpoint.stop(), 10)
            except Exception as exc:  # disconnect always releases the thread
                log.warning("disconnect: %s", exc)
        self._shutdown()

    def _shutdown(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            if self._endpoint is not None and self._endpoint.running:
                try:
                    asyncio.run_coroutine_threadsafe(self._endpoint.stop(), loop).result(5)
                except Exception:
                    pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
        self._endpoint, self._loop, self._thread, self._call = None, None, None, None

    def _run(self, coro: Coroutine, timeout: float | None = None) -> Any:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout if timeout is not None else self.timeout + 5)
        except FutureTimeoutError:
            future.cancel()
            raise ConnectionError("the SIP stack did not answer in time") from None

    def _in_loop(self, fn: Callable, *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    # --- calls -----------------------------------------------------------------------------------

    def make_call(self, destination: str) -> bool:
        """Call an extension, number or SIP URI; return True once answered.

        Raises ValueError for a malformed destination, ConnectionError when not connected,
        CallError (``.status`` 486, 404, 408...) when the call fails.
        """
        destination = (destination or "").strip()
        if not (_NUMBER.match(destination) or _USER_AT_HOST.match(destination)
                or _URI.match(destination)):
            raise ValueError(f"not a phone number, extension or SIP URI: {destination!r}")
        if not self.running or self._endpoint is None:
            raise ConnectionError("not connected")
        if self.call_state is not CallState.IDLE:
            raise CallError("a call is already in progress")
        self._run(self._endpoint.call(destination, timeout=self.config.call_timeout,
                                      on_created=self._adopt),
                  self.config.call_timeout + 10)
        return True

    def answer_call(self) -> bool:
        """Answer the ringing incoming call (RuntimeError when none is ringing)."""
        call = self._call
        if call is None or call.direction != "inbound" or call.state is not CallState.RINGING:
            raise RuntimeError("no incoming call is ringing")
        self._run(call.answer())
        return True

    def end_call(self) -> None:
        """Hang up: CANCEL before an answer, BYE after, 603 for an unanswered incoming call."""
        call = self._call
        if call is None or not call.is_live or self._loop is None:
            return
        self._run(call.hangup())

    def get_call_status(self) -> dict[str, Any]:
        """State, remote/local RTP, queued audio, duration and RTP statistics of the call;
        ``srtp_suite`` names the SRTP suite when the media is encrypted (else None)."""
        call = self._call
        status: dict[str, Any] = {"state": self.call_state.value, "remote_rtp": None,
                                  "local_rtp_port": None, "audio_buffer_size": 0,
                                  "call_duration": 0.0}
        if call is None or not call.is_live:
            return status
        remote = call.remote_rtp
        status.update(
            call_id=call.id, direction=call.direction, codec=call.codec,
            remote_rtp=f"{remote[0]}:{remote[1]}" if remote else None,
            local_rtp_port=call.local_rtp_port, audio_buffer_size=call.queued_audio_bytes,
            call_duration=(self._loop.time() - call.answered_at) if call.answered_at and self._loop else 0.0,
        )
        status.update(call.stats())
        status["srtp_suite"] = call.srtp_suite
        return status

    # --- media -----------------------------------------------------------------------------------

    def set_audio_callback(self, callback: AudioCallback | None, format: str = "pcmu") -> None:
        """Receive audio: ``callback(audio_bytes, format)`` per 20 ms frame, u-law bytes for
        ``'pcmu'`` or 16-bit little-endian PCM for ``'pcm'`` (A-law calls are transcoded)."""
        if format not in ("pcmu", "pcm"):
            raise ValueError("format must be 'pcmu' or 'pcm'")
        self._audio_callback, self._audio_format = callback, format

    def send_audio(self, ulaw: bytes) -> None:
        """Queue u-law audio to send; returns at once (the media clock paces it)."""
        # Appending to the call's queue is one bytearray operation (atomic under the GIL), so it is
        # done here rather than through the loop: the queue size is right when this returns.
        self._live_call().queue_audio(bytes(ulaw), "PCMU")

    def send_pcm(self, pcm: bytes) -> None:
        """Queue 16-bit little-endian 8 kHz PCM to send; returns at once."""
        self._live_call().queue_pcm(bytes(pcm))

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        """Send DTMF digits (RFC 4733, SIP INFO if the peer has no telephone-event)."""
        if not digits or any(d not in "0123456789*#ABCDabcd" for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        call = self._live_call()
        self._in_loop(call.send_dtmf, digits.upper(), duration_ms)

    def set_dtmf_callback(self, callback: Callable[[str], Any] | None) -> None:
        """``callback(digit)`` for every key press received (RFC 4733 or SIP INFO)."""
        self._dtmf_callback = callback

    def set_incoming_call_callback(self, callback: IncomingCallback | None) -> None:
        """``callback(caller, headers)`` for every incoming call: True answers, an int rejects
        with that status, False rejects with 486, None leaves it ringing for answer_call()."""
        self._incoming_callback = callback

    def _live_call(self) -> Call:
        call = self._call
        if call is None or not call.is_live or call.rtp is None:
            raise RuntimeError("no active call")
        return call

    # --- on the loop thread ----------------------------------------------------------------------

    def _adopt(self, call: Call) -> None:
        self._call = call
        call.on_audio = self._deliver_audio
        call.on_dtmf = self._deliver_dtmf

    def _deliver_audio(self, pcm: bytes) -> None:
        callback = self._audio_callback
        if callback is None:
            return
        if self._audio_format == "pcmu":
            callback(g711.pcm_to_ulaw(pcm), "pcmu")
        else:
            callback(pcm, "pcm")

    def _deliver_dtmf(self, digit: str, source: str, duration_ms: int) -> None:
        if self._dtmf_callback is not None:
            self._dtmf_callback(digit)

    async def _on_incoming_call(self, call: Call) -> None:
        if self.call_state is not CallState.IDLE:
            await call.reject(486)
            return
        self._adopt(call)
        if self._incoming_callback is None:
            return
        headers = dict(call.headers.items()) if call.headers is not None else {}
        try:
            decision = self._incoming_callback(call.from_uri, headers)
        except Exception:
            log.exception("incoming call callback failed; rejecting")
            decision = 500
        if decision is True:
            await call.answer()
        elif decision is False:
            await call.reject(486)
        elif isinstance(decision, int):
            await call.reject(decision)
