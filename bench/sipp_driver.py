"""Running SIPp as the load generator and reading its verdict.

The scenarios in ``bench/sipp/`` have placeholders filled by :func:`fill_scenario`: ``@HOLD_MS@``,
and in the capacity caller its media (:class:`bench.media.CallerMedia`). SIPp opens its media
files relative to its working folder, so each run gets its own folder with them and the filled
scenario.
"""

from __future__ import annotations

import csv
import logging
import random
import re
import socket
import subprocess
import weakref
from dataclasses import dataclass
from pathlib import Path

from bench.media import CallerMedia

log = logging.getLogger(__name__)

SCENARIO_DIR = Path(__file__).resolve().parent / "sipp"


@dataclass
class SippOutcome:
    """SIPp's count of the run's calls and its exit status (0 all good, 1 some failed)."""

    successful: int = 0
    failed: int = 0
    attempted: int = 0
    exit_status: int | None = None
    elapsed: float = 0.0
    answer_time: float = 0.0  # mean INVITE -> 200 (SIPp's ResponseTime1), seconds
    call_length: float = 0.0  # mean call duration, seconds


def fill_scenario(name: str, folder: Path, hold_ms: int, media: CallerMedia | None = None,
                  sdp_media_port: int | None = None) -> Path:
    """Write ``bench/sipp/<name>`` into ``folder`` with its placeholders filled.

    ``media`` (in ``folder``) is what each call sends while it is held. ``sdp_media_port``
    replaces SIPp's own media port in the SDP offer: a peer that sends to the SDP address (no
    latching, like pyVoIP) then sends every call's RTP to that port.
    """
    text = (SCENARIO_DIR / name).read_text().replace("@HOLD_MS@", str(hold_ms))
    if media is not None:
        streamed = media.audio is not None
        port = "[rtpstream_audio_port]" if streamed else "[auto_media_port]"
        text = text.replace("@MEDIA_PORT@", str(sdp_media_port) if sdp_media_port is not None else port)
        # play_pcap_audio sends from the port of the last [media_port] or [auto_media_port] in
        # the call's messages; with rtp_stream the SDP names neither, so a header does: the
        # global media port, where rtp_stream sends from (the key presses come from the same
        # address as the speech, or a latching server would drop them). SIPp only accepts
        # the keyword on a line that says "audio".
        source = r"\1X-Bench-Media: audio [media_port]\n" if streamed else ""
        text = re.sub(r"^([ \t]*)@MEDIA_SOURCE@\n", source, text, flags=re.M)
        text = text.replace("@MEDIA@", _media_actions(media, hold_ms))
    path = folder / name
    path.write_text(text)
    return path


def _media_actions(media: CallerMedia, hold_ms: int) -> str:
    """The scenario lines that send ``media`` for ``hold_ms``: start the streamed speech, play each
    pcap at its time, pause until the hold is over."""
    lines = []
    if media.audio is not None:  # loop the speech for the whole call (-1), payload type 0 (PCMU)
        lines.append(f'<nop><action><exec rtp_stream="{media.audio.name},-1,0"/></action></nop>')
    elapsed = 0
    for at, pcap in media.plays:
        due = round(at * 1000)
        if due > elapsed:
            lines.append(f'<pause milliseconds="{due - elapsed}"/>')
            elapsed = due
        lines.append(f'<nop><action><exec play_pcap_audio="{pcap.name}"/></action></nop>')
    lines.append(f'<pause milliseconds="{max(0, hold_ms - elapsed)}"/>')
    return "\n  ".join(lines)


def start_sipp(scenario: Path, target: tuple[str, int], calls: int, rate: float, folder: Path,
               local_port: int = 0, keys: dict[str, str] | None = None,
               timeout_s: int = 600) -> subprocess.Popen:
    """Start SIPp placing ``calls`` calls at ``rate`` per second (all may overlap).

    SIPp's ``-p 0`` means its default port 5060, not "any port", so a free port is chosen here
    (and for its control socket, 8888 by default, on every interface). The callers' media ports
    are held open (:class:`CallerMediaPorts`) for as long as the returned process object lives.
    """
    from bench.systems import free_udp_port

    # The callers' media ports first: ports picked free before them could land in their range.
    # (A scenario without media, like the set-up rate test's, needs only SIPp's own pair.)
    callers = calls if "[auto_media_port]" in scenario.read_text() else 0
    media_ports = CallerMediaPorts.open(callers, avoid=(local_port,) if local_port else ())
    media_base = media_ports.base
    local_port = local_port or free_udp_port()
    command = [
        "sipp", "-sf", str(scenario), "-s", "bench", f"{target[0]}:{target[1]}",
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(local_port), "-mp", str(media_base),
        "-cp", str(free_udp_port()),
        "-m", str(calls), "-l", str(calls), "-r", f"{max(rate, 0.1):g}", "-rp", "1000",
        "-nostdin", "-trace_stat", "-stf", str(folder / "stats.csv"), "-fd", "1",
        "-trace_err", "-error_file", str(folder / "errors.log"),
        "-timeout", f"{timeout_s}s", "-timeout_error", "-max_socket", "20000",
    ]
    for key, value in (keys or {}).items():
        command += ["-key", key, value]
    log.debug("starting %s", " ".join(command))
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL,
                               stderr=(folder / "sipp.stderr").open("wb"))
    weakref.finalize(process, media_ports.close)
    return process


class CallerMediaPorts:
    """UDP sockets bound where SIPp's callers say they receive audio, so that what is sent to a
    caller reaches a socket, as it would on a real phone.

    SIPp's ``[auto_media_port]`` advertises ``-mp`` base + 4 * (call number - 1) (a port pair per
    medium), but SIPp binds nothing there: it plays its pcap through a raw socket. With
    ``rtp_stream`` every call sends from (and offers) SIPp's own socket at the base, whose RTCP
    port, base + 1, SIPp leaves unbound too. Without these sockets every RTP and RTCP packet the
    server sends a caller would hit a closed port, and the kernel would answer each with an ICMP
    port unreachable, built and delivered inside the server's ``sendto`` (loopback is exempt from
    ICMP rate limiting): a cost, about two thirds of each send, that no real caller imposes. The
    sockets are never read; their receive buffers are made as small as the kernel allows, so what
    overflows is dropped on arrival.
    """

    #: SIPp's auto media ports wrap after this many calls (``(4 * n) % 10000``).
    WRAP = 2500

    def __init__(self, base: int, sockets: list[socket.socket]):
        self.base = base
        self.sockets = sockets

    @classmethod
    def open(cls, calls: int, avoid: tuple[int, ...] = ()) -> "CallerMediaPorts":
        """Bind RTP and RTCP ports for ``calls`` callers at a free base (below 65536) whose range
        leaves out the ports in ``avoid`` (already chosen for SIPp, not bound yet)."""
        count = min(calls, cls.WRAP)
        for _ in range(50):
            base = random.randrange(40000, 65535 - 4 * max(count, 1) - 10, 4)
            if any(base <= port < base + 4 * max(count, 1) for port in avoid):
                continue
            sockets: list[socket.socket] = []
            try:
                # SIPp binds base and base + 2 itself (its echo sockets, which rtp_stream
                # sends from): check they are free. Call 1's ports are base and base + 1.
                for port in (base, base + 2):
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                        probe.bind(("127.0.0.1", port))
                ports = [base + 1] + [base + 4 * (n - 1) + k for n in range(2, count + 1) for k in (0, 1)]
                for port in ports:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sockets.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
                    sock.bind(("127.0.0.1", port))
            except OSError:
                for sock in sockets:
                    sock.close()
                continue  # taken (a server's RTP socket, another test): try another base
            return cls(base, sockets)
        raise RuntimeError(f"no free range of media ports for {calls} SIPp callers")

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


def read_outcome(folder: Path, exit_status: int | None) -> SippOutcome:
    """SIPp's cumulative counters from the last line of its statistics file."""
    outcome = SippOutcome(exit_status=exit_status)
    stats = folder / "stats.csv"
    if not stats.exists():
        return outcome
    rows = list(csv.DictReader(stats.open(newline=""), delimiter=";"))
    if not rows:
        return outcome
    last = rows[-1]
    outcome.successful = int(last.get("SuccessfulCall(C)", 0) or 0)
    outcome.failed = int(last.get("FailedCall(C)", 0) or 0)
    outcome.attempted = int(last.get("TotalCallCreated", 0) or 0)
    outcome.elapsed = _seconds(last.get("ElapsedTime(C)", "") or "")
    outcome.answer_time = _seconds(last.get("ResponseTime1(C)", "") or "")
    outcome.call_length = _seconds(last.get("CallLength(C)", "") or "")
    return outcome


def _seconds(text: str) -> float:
    """SIPp's ``HH:MM:SS:uuuuuu`` (sometimes with a leading date) as seconds."""
    parts = text.strip().split(":")[-4:]
    try:
        hours, minutes, seconds, micros = (int(p) for p in parts)
    except ValueError:
        return 0.0
    return hours * 3600 + minutes * 60 + seconds + micros / 1e6
