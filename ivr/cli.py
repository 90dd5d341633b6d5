"""The ``ivr`` command: ``serve``, ``call``, and the flow tools ``check``, ``schema``, ``simulate``,
``graph``.

``ivr serve [--config FILE] [FLOW...]``
    Run the auto-attendant. With no arguments: 127.0.0.1:5060 over UDP and TCP with
    ``flows/attendant.yaml`` of the project, no PBX needed.
``ivr call URI [--dtmf "+1s 1 2#"] [--play FILE] [--record FILE] [--duration S] [--srtp POLICY]``
    A scripted caller: dials, waits for the answer, plays a file and/or sends digits, records what
    it hears to a WAV file and hangs up. Exit status 0 when the call was answered and completed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ivr.audio import FRAME_SAMPLES, SAMPLE_RATE, read_wav, write_wav
from ivr.caller_script import parse_dtmf_script
from ivr.flows.cli import add_commands as add_flow_commands

log = logging.getLogger(__name__)

#: The least time between two key presses sent one after another (a 100 ms tone and a pause).
DIGIT_GAP = 0.25


# -- the scripted caller --------------------------------------------------------------------


def sip_uri(target: str) -> str:
    """``target`` as a SIP URI: ``sip:`` is added to ``user@host[:port]`` or ``host:port``;
    ``ValueError`` for what is no SIP URI at all."""
    from simplesip.wire.uri import SipURI

    text = target.strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = f"sip:{text}"
    try:
        uri = SipURI.parse(text)
    except ValueError as exc:
        raise ValueError(f"{target!r} is not a SIP URI ({exc}; e.g. sip:attendant@127.0.0.1:5060)") from None
    if not uri.host:
        raise ValueError(f"{target!r} names no host (e.g. sip:attendant@127.0.0.1:5060)")
    return text


@dataclass
class CallReport:
    """What ``ivr call`` saw."""

    answered: bool = False
    status: int | None = None  # final failure status when not answered
    end_reason: str | None = None
    heard: list[np.ndarray] = field(default_factory=list)
    digits_sent: str = ""
    duration: float = 0.0
    srtp_suite: str | None = None  # the SRTP suite of the answered call, None for plain RTP


async def place_call(uri: str, *, dtmf: str = "", play: str | None = None, duration: float = 10.0,
                     local_host: str = "127.0.0.1", answer_timeout: float = 15.0,
                     transport: str = "udp", tls: dict[str, Any] | None = None,
                     srtp: str = "off") -> CallReport:
    """Dial ``uri`` from an ephemeral local endpoint and run the script; see :class:`CallReport`.

    ``transport``: how to reach a URI that does not say (a ``sips:`` URI or ``;transport=tls``
    always means TLS); ``tls``: EndpointConfig TLS options (``tls_ca_file``, ``tls_verify``,
    ``tls_client_cert_file``...); ``srtp``: the call's SRTP policy (off, optional, mandatory)."""
    from simplesip.aio.endpoint import Endpoint
    from simplesip.aio.endpoint_config import EndpointConfig

    report = CallReport()
    script = parse_dtmf_script(dtmf)
    uri = sip_uri(uri)
    outgoing = read_wav(play) if play else np.zeros(0, dtype=np.int16)
    played = 0
    transports = ("udp",) if transport == "udp" else ("udp", transport)
    if "tls" not in transports and (uri[:5].lower() == "sips:" or ";transport=tls" in uri.lower()):
        transports += ("tls",)
    if "tcp" not in transports and ";transport=tcp" in uri.lower():
        transports += ("tcp",)
    endpoint = Endpoint(EndpointConfig(local_host=local_host, sip_port=0, transports=transports,
                                       transport=transport, srtp=srtp, **(tls or {})))

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
        report.srtp_suite = getattr(call, "srtp_suite", None)
        started = time.monotonic()
        ended = asyncio.ensure_future(call.ended.wait())
        last_key = float("-inf")
        for at, key in script:  # times from the answer; keys due together go one after another
            due = max(at, last_key + DIGIT_GAP) if key != "hangup" else at
            wait = due - (time.monotonic() - started)
            if wait > 0:
                await asyncio.wait([ended], timeout=wait)
            if ended.done() or key == "hangup":
                break
            await _send_digit(call, key)
            last_key = time.monotonic() - started
            report.digits_sent += key
        if script and script[-1][1] == "hangup":
            duration = 0.0  # the script hangs up
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
        tls = {"tls_ca_file": args.ca, "tls_verify": not args.no_verify,
               "tls_client_cert_file": args.cert, "tls_client_key_file": args.key}
        report = asyncio.run(place_call(args.uri, dtmf=args.dtmf or "", play=args.play,
                                        duration=args.duration, answer_timeout=args.timeout,
                                        transport=args.transport, tls=tls, srtp=args.srtp))
    except (OSError, ValueError) as exc:
        print(f"ivr call: {exc}", file=sys.stderr)
        return 2
    if args.record and report.answered:  # no empty file for a call that was never answered
        write_wav(args.record, np.concatenate(report.heard) if report.heard else np.zeros(0, np.int16))
    if not report.answered:
        print(f"not answered: {report.status or ''} {report.end_reason}".replace("  ", " "), file=sys.stderr)
        return 1
    print(f"answered; sent {report.digits_sent or 'no digits'}; {report.end_reason} after "
          f"{report.duration:.1f} s; heard {len(report.heard) * FRAME_SAMPLES / SAMPLE_RATE:.1f} s of audio"
          f"{'; SRTP ' + report.srtp_suite if report.srtp_suite else ''}")
    return 0


# -- serve --------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from ivr.config import ConfigError
    from ivr.loading import SetupError
    from ivr.logs import configure_logging
    from ivr.server import IvrServer, NoFlowsError

    configure_logging("text", "debug" if args.verbose else "warning")  # until the config says
    try:
        server = IvrServer(args.config, args.flows, listen=args.listen, overrides=args.set)
    except ConfigError as exc:
        print(f"ivr serve: {exc}", file=sys.stderr)
        return 2
    except SetupError as exc:
        for line in exc.problems:
            print(f"ivr serve: {line}", file=sys.stderr)
        print("ivr serve: not starting", file=sys.stderr)
        return 2
    except NoFlowsError as exc:
        for line in exc.problems:
            print(f"ivr serve: {line}", file=sys.stderr)
        print("ivr serve: no flow to serve; not starting", file=sys.stderr)
        return 2
    configure_logging(server.config.log_format, "debug" if args.verbose else server.config.log_level)
    try:
        return asyncio.run(server.run())
    except OSError as exc:  # the SIP or metrics port is taken, or the address is not ours
        print(f"ivr serve: cannot listen on {server.config.listen_host}:{server.config.listen_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2


def _host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as given to ``--listen``."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:5060)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IP address (e.g. 0.0.0.0:5060)") from None
    return host, int(port)


# -- entry point --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``ivr`` argument parser (flow tools added by :mod:`ivr.flows.cli`)."""
    parser = argparse.ArgumentParser(prog="ivr", description="SimpleSIP IVR: serve, call and check flows.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser(
        "serve", help="answer calls and run flows",
        description="Answer SIP calls and run flows. With no arguments: 127.0.0.1:5060 over UDP and TCP, "
                    "the project's flows/attendant.yaml, no PBX. Every configuration key, with its default, "
                    "is listed in docs/deploy.md (and in `python -c 'import ivr.config; help(ivr.config)'`).",
    )
    serve.add_argument("--config", "-c", help="YAML configuration file (default: the built-in defaults)")
    serve.add_argument("--listen", "-l", metavar="HOST:PORT", type=_host_port,
                       help="address to take calls on (default 127.0.0.1:5060, or the config's listen:); "
                            "port 0 picks a free one")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a configuration value on top of the file, e.g. limits.max_calls=5 or "
                            "plugins.vad.aggressiveness=3 (value read as YAML); repeatable")
    serve.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    serve.add_argument("flows", nargs="*", metavar="FLOW",
                       help="flow files or folders of *.yaml (default: the config's flows:, else "
                            "flows/attendant.yaml)")
    serve.set_defaults(func=_cmd_serve)

    call = commands.add_parser("call", help="place a scripted test call")
    call.add_argument("uri", metavar="URI", help="e.g. sip:attendant@127.0.0.1:5060")
    call.add_argument("--dtmf", help='keys from the answer on, as ivr simulate reads them: "+1s 1 +2s 2#", '
                                     '"@5 hangup" (keys due together go 0.25 s apart)')
    call.add_argument("--play", metavar="FILE", help="WAV file to play once answered")
    call.add_argument("--record", metavar="FILE", help="write what the caller hears to this WAV")
    call.add_argument("--duration", type=float, default=10.0, help="hang up after S seconds (default 10)")
    call.add_argument("--timeout", type=float, default=15.0, help="give up unanswered after S seconds")
    call.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp",
                      help="transport when the URI does not say (sips: or ;transport=tls: TLS)")
    call.add_argument("--ca", metavar="FILE", help="TLS: CAs (PEM) that vouch for the server (default: "
                                                   "the system's)")
    call.add_argument("--no-verify", action="store_true",
                      help="TLS: accept any server certificate (a lab only)")
    call.add_argument("--cert", metavar="FILE", help="TLS: our client certificate (mutual TLS)")
    call.add_argument("--key", metavar="FILE", help="TLS: the client certificate's key")
    call.add_argument("--srtp", choices=("off", "optional", "mandatory"), default="off",
                      help="SRTP policy of the call: optional offers RTP/AVP with crypto lines, mandatory "
                           "RTP/SAVP (default off)")
    call.set_defaults(func=_cmd_call)

    add_flow_commands(commands)
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
