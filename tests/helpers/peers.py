"""Real-peer harness: run SIPp, baresip and Kamailio against the code under test.

Every runner gets its own temporary folder and free ports (other test sessions run on the same
machine at the same time), writes its logs there, and is stopped by pid when the test ends. The
configuration templates live in ``tests/data/peers``; ``@DIR@`` in them becomes the peer's folder.

Typical use::

    def test_x(tmp_path):
        with SippRunner(tmp_path, scenario="uac", remote=("127.0.0.1", port)) as sipp:
            ...
            assert sipp.wait(10) == 0, sipp.log()
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import wave
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.sipp_driver import CallerMediaPorts
from simplesip.wire.grammar import format_host
from tests.helpers.net import free_port
from tests.helpers.paths import DATA

log = logging.getLogger(__name__)

PEER_DATA = DATA / "peers"
SIPP_PCAPS = Path("/usr/share/sip-tester")


def render_template(name: str, dest: Path, replacements: dict[str, str]) -> Path:
    """Copy ``tests/data/peers/<name>`` to ``dest`` with every placeholder replaced."""
    text = (PEER_DATA / name).read_text()
    for key, value in replacements.items():
        text = text.replace(key, value)
    dest.write_text(text)
    return dest


def write_wav(path: Path, pcm: np.ndarray, rate: int = 8000) -> Path:
    """Write mono 16-bit PCM as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit WAV file (what baresip's sndfile module writes)."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
    return data, rate


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0) -> np.ndarray:
    """A sine tone as int16 samples."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_frequency(pcm: np.ndarray, rate: int = 8000) -> float:
    """The frequency (Hz) with the most energy in ``pcm`` (DC removed, Hann window)."""
    x = pcm.astype(np.float64)
    x -= x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


class PeerProcess:
    """A third-party program started in its own folder, its output captured to a log file."""

    def __init__(self, name: str, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self._log_file = open(self.log_path, "wb")
        # A new session so that stop() can signal the peer's own children and nothing else.
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
        )
        log.info("started %s (pid %d): %s", name, self.proc.pid, " ".join(self.argv))

    def log(self) -> str:
        """Everything the peer printed so far (also after :meth:`stop`)."""
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Block until the peer exits (raises subprocess.TimeoutExpired)."""
        return self.proc.wait(timeout)

    async def wait_async(self, timeout: float) -> int:
        """Wait for the exit without blocking the running event loop."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        """Terminate the peer (and only its process group), then kill it if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(3)
            except ProcessLookupError:
                pass
        self._log_file.close()

    def __enter__(self) -> "PeerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- SIPp


class SippRunner(PeerProcess):
    """SIPp with a built-in scenario (``scenario="uac"``) or a scenario file (a Path).

    ``remote`` is where a UAC sends; ``port`` is SIPp's own SIP port (free by default);
    ``media_port`` SIPp's RTP port. ``pcap/`` in the folder points at the Debian pcaps.

    By default the media ports of all ``calls`` are held bound while SIPp runs
    (:class:`bench.sipp_driver.CallerMediaPorts`): SIPp advertises a port per call
    (``[auto_media_port]``) but binds none of them, so a relay or another call could otherwise
    bind one and receive a stream meant for a caller, as tests/test_robust_loss.py once did.
    """

    def __init__(self, workdir: Path, scenario: str | Path, *, remote: tuple[str, int] | None = None,
                 port: int | None = None, media_port: int | None = None, service: str = "test",
                 calls: int = 1, extra: Sequence[str] = (), name: str = "sipp", host: str = "127.0.0.1"):
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = host  # "::1": SIPp signals and sends media over IPv6
        pcap_link = workdir / "pcap"
        if not pcap_link.exists():
            pcap_link.symlink_to(SIPP_PCAPS)
        self.port = port or free_port()
        self._media_ports = None if media_port else CallerMediaPorts.open(calls, avoid=(self.port,))
        self.media_port = media_port or self._media_ports.base
        argv = ["sipp"]
        if isinstance(scenario, Path):
            argv += ["-sf", str(scenario)]
        else:
            argv += ["-sn", scenario]
        if remote is not None:
            argv.append(f"[{remote[0]}]:{remote[1]}" if ":" in remote[0] else f"{remote[0]}:{remote[1]}")
        argv += ["-i", host, "-p", str(self.port), "-mi", host,
                 "-mp", str(self.media_port), "-s", service, "-m", str(calls), "-nostdin",
                 "-trace_err", "-trace_msg", "-message_file", str(workdir / f"{name}_messages.log"),
                 "-error_file", str(workdir / f"{name}_errors.log"), *extra]
        super().__init__(name, argv, workdir)
        if remote is None:  # a server scenario: callers must not race its start-up
            self.wait_listening()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Block until SIPp has bound its SIP port (a datagram sent earlier would bounce)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipp exited early:\n{self.log()}")
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # -t u1 or -t t1
                with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, kind) as probe:
                    try:
                        probe.bind((self.host, self.port))
                    except OSError:
                        return  # taken: SIPp is listening
            time.sleep(0.02)
        raise TimeoutError(f"sipp did not bind {self.port}:\n{self.log()}")

    def stop(self) -> None:
        super().stop()
        if self._media_ports is not None:
            self._media_ports.close()

    def messages(self) -> str:
        """SIPp's trace of every message sent and received (``-trace_msg``)."""
        path = self.cwd / f"{self.name}_messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        errors = self.cwd / f"{self.name}_errors.log"
        extra = errors.read_text(errors="replace") if errors.exists() else ""
        return super().log() + extra + self.messages()[-4000:]


def dump_sipp_scenario(name: str) -> str:
    """The XML of a SIPp built-in scenario, for tests that edit one."""
    # sipp exits 99 ("no calls") after dumping: judge by the output instead
    out = subprocess.run(["sipp", "-sd", name], capture_output=True, text=True).stdout
    if "<scenario" not in out:
        raise ValueError(f"sipp has no built-in scenario {name!r}")
    return out


# ------------------------------------------------------------------------------- baresip


class BaresipRunner(PeerProcess):
    """baresip headless: plays ``microphone`` (int16 PCM, 8 kHz) as its microphone, records what it
    hears to ``rec/dump-*-dec.wav``, auto-answers, and takes commands on a free ctrl_tcp port.
    ``extra_config`` lines are appended to its config file."""

    def __init__(self, workdir: Path, *, microphone: np.ndarray | None = None,
                 account: str | None = None, commands: Sequence[str] = (), run_seconds: int = 20,
                 extra_config: Sequence[str] = (), host: str = "127.0.0.1"):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rec").mkdir(exist_ok=True)
        self.host = host  # "::1": SIP and RTP over IPv6 (the control port stays on 127.0.0.1)
        (workdir / "contacts").touch()
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        mic = microphone if microphone is not None else np.zeros(8000 * 15, dtype=np.int16)
        write_wav(workdir / "caller.wav", mic)
        rtp_base = random.randrange(20000, 29800, 2)
        render_template("baresip/config", workdir / "config", {
            "@DIR@": str(workdir),
            "127.0.0.1:5070": f"{format_host(host, self.sip_port)}",
            "net_interface\t\t127.0.0.1": f"net_interface\t\t{host}",
            "127.0.0.1:4444": f"127.0.0.1:{self.ctrl_port}",
            "30000-30100": f"{rtp_base}-{rtp_base + 200}",
        })
        if extra_config:  # e.g. "module srtp.so", or "sip_cafile FILE" for SIP over TLS
            with open(workdir / "config", "a") as config:
                config.write("".join(f"{line}\n" for line in extra_config))
        (workdir / "accounts").write_text(
            (account or f"<sip:caller@{format_host(host, None)}>;regint=0;audio_codecs=pcmu,pcma;answermode=auto")
            + "\n")
        argv = ["timeout", "-k", "3", str(run_seconds + 5), "baresip", "-f", str(workdir),
                "-t", str(run_seconds)]
        for command in commands:
            argv += ["-e", command]
        super().__init__("baresip", argv, workdir)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.sip_port)

    @property
    def tls_address(self) -> tuple[str, int]:
        """baresip's SIP-over-TLS listener (with ``sip_certificate``): the SIP port + 1."""
        return ("127.0.0.1", self.sip_port + 1)

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Block until the ctrl_tcp port accepts connections (baresip finished starting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"baresip did not start:\n{self.log()}")

    def command(self, command: str, params: str = "") -> dict | None:
        """Send one ctrl_tcp command (netstring-framed JSON); return baresip's response, if any."""
        msg = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=3) as s:
            s.sendall(b"%d:%s," % (len(msg), msg))
            buf = b""
            s.settimeout(2)
            try:
                while b'"response"' not in buf or not buf.endswith(b","):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            except socket.timeout:
                pass
        for item in _netstrings(buf):
            if item.get("response"):
                return item
        return None

    def listen_events(self) -> "BaresipEvents":
        """Open a ctrl_tcp connection that collects baresip's events (CALL_DTMF_START, ...)."""
        return BaresipEvents(self.ctrl_port)

    def recordings(self, kind: str = "dec") -> list[Path]:
        """The WAV files baresip recorded: ``dec`` is what it heard, ``enc`` what it sent."""
        return sorted((self.cwd / "rec").glob(f"dump-*-{kind}.wav"))


class BaresipEvents:
    """baresip's ctrl_tcp event stream, read in a background thread into ``events``.

    ctrl_tcp sends events to its latest connection only: while this is open, send commands with
    :meth:`command` here, not with ``BaresipRunner.command`` (a new connection).
    """

    def __init__(self, ctrl_port: int):
        import threading

        self.events: list[dict] = []
        self._sock = socket.create_connection(("127.0.0.1", ctrl_port), timeout=3)
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        while not self._stop:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b":" in buf:
                length, rest = buf.split(b":", 1)
                if not length.isdigit() or len(rest) < int(length) + 1:
                    break
                n = int(length)
                self.events.append(json.loads(rest[:n]))
                buf = rest[n + 1:]

    def command(self, command: str, params: str = "") -> None:
        """Send a command on this connection (its response lands in ``events``)."""
        msg = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        self._sock.sendall(b"%d:%s," % (len(msg), msg))

    def of_type(self, kind: str) -> list[dict]:
        """Events whose ``type`` is ``kind`` (e.g. ``CALL_DTMF_START``)."""
        return [e for e in list(self.events) if e.get("type") == kind]

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        self._thread.join(2)


def _netstrings(buf: bytes) -> list[dict]:
    items = []
    while buf and b":" in buf:
        length, rest = buf.split(b":", 1)
        try:
            n = int(length)
        except ValueError:
            break
        items.append(json.loads(rest[:n]))
        buf = rest[n + 1:]
    return items


# ------------------------------------------------------------------------------ Kamailio


class KamailioRunner(PeerProcess):
    """Kamailio as registrar (digest auth, users alice/secret and ivr/ivrpass) and dispatcher
    (INVITEs to user ``ivr`` go to ``dispatch_to``), on a free UDP port (and TCP on the same
    port with ``tcp=True``; with ``tls=(cert_file, key_file)`` TLS too, on ``tls_port``, through
    the tls module)."""

    def __init__(self, workdir: Path, *, dispatch_to: Sequence[tuple[str, int]] = (),
                 tcp: bool = False, tls: tuple[str, str] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "run").mkdir(exist_ok=True)
        self.port = free_port()
        shutil.copytree(PEER_DATA / "kamailio-db", workdir / "db", dirs_exist_ok=True)
        (workdir / "dispatcher.list").write_text(
            "".join(f"1 sip:{host}:{port}\n" for host, port in dispatch_to) or "1 sip:127.0.0.1:9\n")
        replacements = {"@DIR@": str(workdir), "127.0.0.1:5060": f"127.0.0.1:{self.port}"}
        if tcp:
            replacements["disable_tcp=yes"] = f"disable_tcp=no\nlisten=tcp:127.0.0.1:{self.port}"
        self.tls_port = free_port(socket.SOCK_STREAM) if tls else None
        if tls:
            render_template("kamailio-tls.cfg", workdir / "tls.cfg", {
                "@DIR@/cert.pem": tls[0], "@DIR@/key.pem": tls[1]})
            listen = replacements.get("disable_tcp=yes", "disable_tcp=no")
            replacements["disable_tcp=yes"] = (
                f"{listen}\nenable_tls=yes\nlisten=tls:127.0.0.1:{self.tls_port}\n"
                f'alias="127.0.0.1:{self.tls_port}"')
            replacements['loadmodule "kex.so"'] = (
                f'loadmodule "tls.so"\nmodparam("tls", "config", "{workdir}/tls.cfg")\nloadmodule "kex.so"')
        cfg = render_template("kamailio.cfg", workdir / "kamailio.cfg", replacements)
        argv = ["kamailio", "-f", str(cfg), "-P", str(workdir / "kamailio.pid"), "-Y",
                str(workdir / "run"), "-m", "64", "-M", "8", "-DD", "-E"]
        super().__init__("kamailio", argv, workdir)
        self._wait_ready()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _wait_ready(self, timeout: float = 8.0) -> None:
        """Probe with OPTIONS until Kamailio answers anything."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.2)
            me = s.getsockname()[1]
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kamailio exited:\n{self.log()}")
                probe = (f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{random.getrandbits(40):x}\r\n"
                         f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
                         f"Call-ID: probe{random.getrandbits(40):x}\r\nCSeq: 1 OPTIONS\r\n"
                         "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
                s.sendto(probe, ("127.0.0.1", self.port))
                try:
                    if s.recv(4096).startswith(b"SIP/2.0"):
                        return
                except (socket.timeout, ConnectionRefusedError):
                    continue
        raise TimeoutError(f"kamailio not ready:\n{self.log()}")

    def registrations(self) -> str:
        """``ul.dump`` through kamcmd: every registered AoR with its contacts."""
        return subprocess.run(["kamcmd", "-s", f"unix:{self.cwd}/run/kamailio_ctl", "ul.dump"],
                              capture_output=True, text=True, timeout=5).stdout


def pcap_rtp_packets(path: Path) -> list[tuple[int, int, int, bytes]]:
    """(payload type, sequence, timestamp, payload) of every RTP packet in a pcap file
    (Ethernet or Linux-cooked link layer, IPv4/UDP), e.g. SIPp's ``g711a.pcap``."""
    import struct

    data = Path(path).read_bytes()
    magic, _vmaj, _vmin, _zone, _sig, _snap, linktype = struct.unpack("<IHHiIII", data[:24])
    if magic != 0xA1B2C3D4:
        raise ValueError("only little-endian microsecond pcap files are supported")
    link_header = {1: 14, 113: 16, 0: 4}[linktype]
    packets = []
    offset = 24
    while offset + 16 <= len(data):
        _sec, _usec, caplen, _origlen = struct.unpack("<IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        ip = frame[link_header:]
        if not ip or ip[0] >> 4 != 4 or ip[9] != 17:  # IPv4 / UDP only
            continue
        rtp = ip[(ip[0] & 0x0F) * 4 + 8:]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        header_len = 12 + 4 * (rtp[0] & 0x0F)
        pt_seq_ts = struct.unpack("!BHI", rtp[1:8])
        packets.append((pt_seq_ts[0] & 0x7F, pt_seq_ts[1], pt_seq_ts[2], rtp[header_len:]))
    return packets
