"""The ``ivr`` command: ``serve``, ``call``, and the flow tools ``check``, ``schema``, ``simulate``.

``ivr serve [--config FILE] [FLOW...]``
    Run the auto-attendant. With no arguments: 127.0.0.1:5060 over UDP and TCP with
    ``flows/attendant.yaml`` of the project, no PBX needed.
``ivr call URI [--dtmf "1 2#"] [--play FILE] [--record FILE] [--duration S]``
    A scripted caller: dials, waits for the answer, plays a file and/or sends digits, records what
    it hears to a WAV file and hangs up. Exit status 0 when the call was answered and completed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ivr.audio import FRAME_SAMPLES, SAMPLE_RATE, read_wav, write_wav

log = logging.getLogger(__name__)

DIGIT_GAP = 0.25  # between the digits of one token ("12#")
TOKEN_GAP = 1.0  # between space-separated tokens ("1 2#")
FIRST_DIGIT_DELAY = 1.0  # after the answer, so the far end's media path is up
DTMF_DIGITS = set("0123456789*#ABCD")


# -- the scripted caller --------------------------------------------------------------------


def parse_dtmf_script(script: str) -> list[tuple[float, str]]:
    """``"1 2#"`` -> ``[(1.0, "1"), (1.0, "2"), (0.25, "#")]``: (pause before, digit).

    The first digit waits :data:`FIRST_DIGIT_DELAY` after the answer, space-separated tokens are
    :data:`TOKEN_GAP` apart and the digits within a token :data:`DIGIT_GAP` apart. A ``+Ns`` or
    ``+Nms`` token replaces the default pause before the next digit with that long.
    """
    steps: list[tuple[float, str]] = []
    explicit: float | None = None
    for token in script.split():
        wait = re.fullmatch(r"\+(\d+(?:\.\d+)?)(ms|s)", token)
        if wait:
            explicit = (explicit or 0.0) + float(wait.group(1)) / (1000 if wait.group(2) == "ms" else 1)
            continue
        for position, digit in enumerate(token.upper()):
            if digit not in DTMF_DIGITS:
                raise ValueError(f"not a DTMF digit: {digit!r} in {script!r}")
            if position:
                pause = DIGIT_GAP
            elif explicit is not None:
                pause = explicit
            else:
                pause = TOKEN_GAP if steps else FIRST_DIGIT_DELAY
            steps.append((pause, digit))
            explicit = None
    return steps


@dataclass
class CallReport:
    """What ``ivr call`` saw."""

    answered: bool = False
    status: int | None = None  # final failure status when not answered
    end_reason: str | None = None
    heard: list[np.ndarray] = field(default_factory=list)
    digits_sent: str = ""
    duration: float = 0.0


async def place_call(uri: str, *, dtmf: str = "", play: str | None = None, duration: float = 10.0,
                     local_host: str = "127.0.0.1", answer_timeout: float = 15.0) -> CallReport:
    """Dial ``uri`` from an ephemeral local endpoint and run the script; see :class:`CallReport`."""
    from simplesip.aio.endpoint import Endpoint
    from simplesip.aio.endpoint_config import EndpointConfig

    report = CallReport()
    script = parse_dtmf_script(dtmf)
    outgoing = read_wav(play) if play else np.zeros(0, dtype=np.int16)
    played = 0
    endpoint = Endpoint(EndpointConfig(local_host=local_host, sip_port=0, transports=("udp",)))

    def on_tick(calls: list[Any], pcm_in: np.ndarray, now: float, tick: int) -> np.ndarray | None:
        nonlocal played
        if not calls:
            return None
        report.heard.append(pcm_in[0].copy())
        out = np.zeros((len(calls), FRAME_SAMPLES), dtype=np.int16)
        chunk = outgoing[played : played + FRAME_SAMPLES]
        out[0, : len(chunk)] = chunk
        played += len(chunk)
        return out

    endpoint.on_tick = on_tick
    await endpoint.start()
    try:
        try:
            call = await asyncio.wait_for(endpoint.call(uri), answer_timeout)
        except asyncio.TimeoutError:
            report.end_reason = "no answer"
            return report
        except Exception as exc:  # simplesip.CallError carries the final status
            report.status = getattr(exc, "status", None)
            report.end_reason = str(exc) or type(exc).__name__
            return report
        report.answered = True
        started = time.monotonic()
        ended = asyncio.ensure_future(call.ended.wait())
        for pause, digit in script:
            if pause:
                await asyncio.wait([ended], timeout=pause)
            if ended.done():
                break
            await _send_digit(call, digit)
            report.digits_sent += digit
        remaining = duration - (time.monotonic() - started)
        if remaining > 0 and not ended.done():
            await asyncio.wait([ended], timeout=remaining)
        report.duration = time.monotonic() - started
        if ended.done():
            report.end_reason = "remote_hangup"
        else:
            ended.cancel()
            report.end_reason = "local_hangup"
            await call.hangup()
    finally:
        await endpoint.stop()
    return report


async def _send_digit(call: Any, digit: str) -> None:
    result = call.send_dtmf(digit)
    if asyncio.iscoroutine(result):
        await result


def _cmd_call(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(place_call(args.uri, dtmf=args.dtmf or "", play=args.play,
                                        duration=args.duration, answer_timeout=args.timeout))
    except (OSError, ValueError) as exc:
        print(f"ivr call: {exc}", file=sys.stderr)
        return 2
    if args.record:
        heard = np.concatenate(report.heard) if report.heard else np.zeros(0, np.int16)
        write_wav(args.record, heard)
    if not report.answered:
        print(f"not answered: {report.status or ''} {report.end_reason}".replace("  ", " "), file=sys.stderr)
        return 1
    print(f"answered; sent {report.digits_sent or 'no digits'}; {report.end_reason} after "
          f"{report.duration:.1f} s; heard {len(report.heard) * FRAME_SAMPLES / SAMPLE_RATE:.1f} s of audio")
    return 0


# -- serve --------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from ivr.config import ConfigError
    from ivr.logs import configure_logging
    from ivr.server import IvrServer

    try:
        server = IvrServer(args.config, args.flows)
    except ConfigError as exc:
        print(f"ivr serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(server.config.log_format, "debug" if args.verbose else server.config.log_level)
    try:
        return asyncio.run(server.run())
    except OSError as exc:  # the SIP or metrics port is taken, or the address is not ours
        print(f"ivr serve: cannot listen on {server.config.listen_host}:{server.config.listen_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2


# -- entry point --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``ivr`` argument parser (flow tools added by :mod:`ivr.flows.cli`)."""
    parser = argparse.ArgumentParser(prog="ivr", description="SimpleSIP IVR: serve, call and check flows.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help="answer calls and run flows")
    serve.add_argument("--config", "-c", help="YAML configuration (default: built-in defaults)")
    serve.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    serve.add_argument("flows", nargs="*", metavar="FLOW", help="flow files or folders (override the config)")
    serve.set_defaults(func=_cmd_serve)

    call = commands.add_parser("call", help="place a scripted test call")
    call.add_argument("uri", metavar="URI", help="e.g. sip:attendant@127.0.0.1:5060")
    call.add_argument("--dtmf", help='digits to send after the answer, e.g. "1 2#" or "+2s 1"')
    call.add_argument("--play", metavar="FILE", help="WAV file to play once answered")
    call.add_argument("--record", metavar="FILE", help="write what the caller hears to this WAV")
    call.add_argument("--duration", type=float, default=10.0, help="hang up after S seconds (default 10)")
    call.add_argument("--timeout", type=float, default=15.0, help="give up unanswered after S seconds")
    call.set_defaults(func=_cmd_call)

    try:
        from ivr.flows.cli import add_commands
    except ImportError as exc:  # the flow tools are optional while ivr.flows is incomplete
        log.debug("flow commands unavailable: %s", exc)
    else:
        add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers and args.command != "serve":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
