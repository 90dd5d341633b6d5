"""The capacity benchmark's harness: its media, its measurements, and one tiny real step.

The real step starts ``ivr serve`` with the benchmark flow, places 3 SIPp calls plus one probe
call for a few seconds and checks that every figure of a results row was actually measured.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import struct
import time
from pathlib import Path

import pytest

from bench import media
from bench.capacity import StepResult, StepSettings, run_steps
from bench.probe import summarise_arrivals
from bench.report import capacity, markdown, write_csv
from bench.sipp_driver import CallerMediaPorts, fill_scenario
from bench.systems import IvrServerUnderTest


def _rtp_fields(data: bytes) -> tuple[bool, int, int, int, int]:
    first, second, sequence, timestamp, ssrc = struct.unpack("!BBHII", data[:12])
    return bool(second & 0x80), second & 0x7F, sequence, timestamp, ssrc


def test_caller_stream_is_one_source_with_rfc4733_keys() -> None:
    stream = media.caller_stream(4.0, [(1.0, "5")], speech=media.tone(300, 4.0))
    fields = [_rtp_fields(p.data) for p in stream]
    assert {f[4] for f in fields} == {0x5157B3C4}  # one SSRC: the server latches exactly one
    sequences = [f[2] for f in fields]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    events = [(p, f) for p, f in zip(stream, fields) if f[1] == media.TELEPHONE_EVENT]
    assert len(events) == media.EVENT_PACKETS + 3
    assert events[0][1][0] is True  # marker on the first packet of the event
    assert len({f[3] for _, f in events}) == 1  # one timestamp for the whole key press
    ends = [p for p, _ in events if p.data[13] & 0x80]
    assert len(ends) == 3 and ends[0].digit_end == "5" and ends[1].digit_end is None
    assert events[0][0].data[12] == 5 and events[0][0].at == pytest.approx(1.0)
    audio_after = [f for f in fields if f[1] == media.PCMU and f[2] > events[-1][1][2]]
    assert audio_after[0][3] == events[0][1][3] + media.FRAME * (media.EVENT_PACKETS + 1)


def _pcap_packets(path: Path) -> list[tuple[float, bytes]]:
    """(time, RTP packet) of each record of a pcap written by write_pcap."""
    data = path.read_bytes()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4
    offset, records = 24, []
    while offset < len(data):
        seconds, micros, length, _ = struct.unpack("<IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + length]
        records.append((seconds + micros / 1e6, frame[14 + 20 + 8:]))
        offset += 16 + length
    return records


def test_pcap_holds_every_packet_with_its_time(tmp_path: Path) -> None:
    stream = media.caller_stream(1.0, [], speech=media.tone(300, 1.0))
    media.write_pcap(tmp_path / "c.pcap", stream)
    records = _pcap_packets(tmp_path / "c.pcap")
    assert [data for _, data in records] == [p.data for p in stream]
    assert records[-1][0] - records[0][0] == pytest.approx(stream[-1].at, abs=1e-5)


def test_streamed_caller_media_is_speech_plus_a_pcap_per_key_press(tmp_path: Path) -> None:
    caller = media.write_caller_media(tmp_path, 12.0)
    assert caller.audio is not None and len(caller.audio.read_bytes()) == 12 * media.RATE  # u-law
    assert [(at, path.name) for at, path in caller.plays] == [
        (2.0, "key_001.pcap"), (5.0, "key_002.pcap"), (8.0, "key_003.pcap")]
    presses = [_pcap_packets(path) for _, path in caller.plays]
    fields = [[_rtp_fields(data) for _, data in press] for press in presses]
    assert {f[1] for press in fields for f in press} == {media.TELEPHONE_EVENT}
    assert {f[4] for press in fields for f in press} == {media.KEYS_SSRC}
    sequences = [f[2] for press in fields for f in press]  # one source over the whole call
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    # Each press is a new event (its own timestamp, the call's time) starting at the pcap's start.
    assert [press[0][3] for press in fields] == [2 * media.RATE, 5 * media.RATE, 8 * media.RATE]
    assert all(press[0][0] and not press[1][0] for press in fields)
    assert [press[0][1][12] for press in presses] == [1, 2, 3]  # digits 1, 2, 3
    times = [t for t, _ in presses[0]]
    assert times[-1] - times[0] == pytest.approx(media.EVENT_PACKETS * media.FRAME_SECONDS, abs=1e-5)
    assert caller.packets_per_call == 600 + 3 * (media.EVENT_PACKETS + 3)


def test_pcap_caller_media_is_one_capture_per_call(tmp_path: Path) -> None:
    caller = media.write_caller_media(tmp_path, 12.0, "pcap")
    [(at, path)] = caller.plays
    assert caller.audio is None and at == 0.0
    assert len(_pcap_packets(path)) == caller.packets_per_call
    with pytest.raises(ValueError, match="stream"):
        media.write_caller_media(tmp_path, 12.0, "wav")


def _scenario_parts(text: str) -> tuple[list[str], str, list[str]]:
    """The INVITE's header lines, its m= line, and the scenario elements between ACK and BYE."""
    invite = text[text.index("INVITE sip:"):text.index("]]>")]
    headers = [line.strip() for line in invite.split("\n\n")[0].splitlines()]
    m_line = next(line.strip() for line in invite.splitlines() if "m=audio" in line)
    held = text[text.index("</send>", text.index("CSeq: 1 ACK")) + 7:text.index("<send", text.index("CSeq: 1 ACK"))]
    return headers, m_line, [line.strip() for line in held.strip().splitlines()]


def test_scenario_streams_speech_and_plays_each_key_from_the_same_port(tmp_path: Path) -> None:
    caller = media.write_caller_media(tmp_path, 12.0)
    headers, m_line, held = _scenario_parts(fill_scenario("uac_bench.xml", tmp_path, 12_000, caller).read_text())
    assert m_line == "m=audio [rtpstream_audio_port] RTP/AVP 0 101"
    # SIPp sends a pcap from the last [media_port]: its global port, where rtp_stream sends from.
    assert "X-Bench-Media: audio [media_port]" in headers and "" not in headers
    assert held == [
        '<nop><action><exec rtp_stream="caller.ulaw,-1,0"/></action></nop>',
        '<pause milliseconds="2000"/>', '<nop><action><exec play_pcap_audio="key_001.pcap"/></action></nop>',
        '<pause milliseconds="3000"/>', '<nop><action><exec play_pcap_audio="key_002.pcap"/></action></nop>',
        '<pause milliseconds="3000"/>', '<nop><action><exec play_pcap_audio="key_003.pcap"/></action></nop>',
        '<pause milliseconds="4000"/>']


def test_scenario_with_a_capture_per_call_or_a_sink(tmp_path: Path) -> None:
    caller = media.write_caller_media(tmp_path, 12.0, "pcap")
    headers, m_line, held = _scenario_parts(fill_scenario("uac_bench.xml", tmp_path, 12_000, caller).read_text())
    assert m_line == "m=audio [auto_media_port] RTP/AVP 0 101"
    assert not any("media_port" in line or "@" in line.split(":")[0] for line in headers)
    assert "" not in headers  # the placeholder line is gone, not left blank (that would end the headers)
    assert held == ['<nop><action><exec play_pcap_audio="caller_12s.pcap"/></action></nop>',
                    '<pause milliseconds="12000"/>']
    streamed = media.write_caller_media(tmp_path, 12.0)
    _, m_line, _ = _scenario_parts(fill_scenario("uac_bench.xml", tmp_path, 12_000, streamed,
                                                 sdp_media_port=40123).read_text())
    assert m_line == "m=audio 40123 RTP/AVP 0 101"


def test_caller_media_ports_bind_what_sipp_leaves_unbound() -> None:
    for calls, offsets in ((3, [1, 4, 5, 8, 9]), (0, [1])):  # with pcaps per call / rtp_stream
        ports = CallerMediaPorts.open(calls)
        try:
            assert sorted(s.getsockname()[1] - ports.base for s in ports.sockets) == offsets
            for port in (ports.base, ports.base + 2):  # SIPp's own pair stays free for SIPp
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sipp:
                    sipp.bind(("127.0.0.1", port))
        finally:
            ports.close()


def test_summarise_arrivals_counts_gaps_across_the_wrap() -> None:
    arrivals = [(0.00, 65534), (0.02, 65535), (0.04, 0), (0.08, 2), (0.10, 3)]  # seq 1 lost
    received, expected, by_time, intervals = summarise_arrivals(arrivals)
    assert (received, expected, by_time) == (5, 6, 6)
    assert intervals == pytest.approx([20, 20, 40, 20])


def test_summarise_arrivals_counts_skipped_clock_ticks_by_time() -> None:
    # No sequence gap, but 60 ms between two packets: the sender's clock skipped two ticks.
    arrivals = [(0.00, 10), (0.02, 11), (0.08, 12), (0.10, 13)]
    received, expected, by_time, _ = summarise_arrivals(arrivals)
    assert (received, expected, by_time) == (4, 4, 6)


def test_report_capacity_and_ratio(tmp_path: Path) -> None:
    ours = [StepResult("simplesip-ivr", "bench", n, completed=n, healthy=True, passed=n <= 100)
            for n in (50, 100, 200)]
    theirs = [StepResult("pyvoip-1.6.8", "prompt+dtmf", 20, completed=20, healthy=True, passed=True),
              StepResult("pyvoip-1.6.8", "prompt+dtmf", 50, failed=3)]
    assert capacity(ours, "simplesip-ivr", "bench") == 100
    assert capacity(ours, "simplesip-ivr", "bench", timing=False) == 200
    text = markdown(ours + theirs, [], [("simplesip-ivr", "bench"), ("pyvoip-1.6.8", "prompt+dtmf")],
                    StepSettings())
    assert "pyvoip-1.6.8 / prompt+dtmf: 20 (20) concurrent calls" in text
    assert "5.0x at the full criteria, 10.0x healthy" in text
    write_csv(tmp_path / "r.csv", ours)
    assert (tmp_path / "r.csv").read_text().count("\n") == 4


@pytest.mark.peer
@pytest.mark.timeout(45)
@pytest.mark.parametrize("caller_media", media.CALLER_MEDIA_MODES)
def test_one_small_step_against_the_real_server(tmp_path: Path, caller_media: str) -> None:
    server = IvrServerUnderTest(tmp_path, flow="bench", max_calls=20)
    server.start()
    try:
        settings = StepSettings(hold=6.0, ramp_rate=20.0, probes=1, caller_media=caller_media)
        [step] = run_steps(server, "bench", [3], settings, tmp_path / "steps")
    finally:
        server.stop()
    # Every figure measured. Quality thresholds are the benchmark's business, not this test's:
    # other work on the machine can slow the server down.
    assert (step.completed, step.failed) == (4, 0)  # 3 SIPp calls + 1 probe call
    assert step.loss_in_pct is not None and 0 <= step.loss_in_pct < 5.0  # the server's own stats
    assert step.loss_out_pct is not None and 0 <= step.loss_out_pct < 5.0  # from the probe
    assert step.send_p50_ms is not None and step.send_p50_ms < 20.0
    assert step.reaction_p50_ms is not None and 0 < step.reaction_p50_ms < 3000
    assert step.server_cpu_pct is not None and step.server_cpu_pct > 0
    assert step.rss_mb is not None and step.rss_mb > 10
    # SIPp's key press (at 2 s of each 6 s call) and the probe's (at 1.5 s) all reached the flow.
    assert (step.keys_sent, step.keys_heard_pct) == (4, 100.0)


@pytest.mark.peer
@pytest.mark.timeout(45)
def test_python_m_bench_writes_table_csv_and_plot(tmp_path: Path) -> None:
    from bench.__main__ import main

    status = main(["--steps", "2", "--duration", "5", "--flows", "bench", "--rates", "",
                   "--probes", "1", "--no-baseline", "--results", str(tmp_path)])
    assert status == 0
    rows = list(csv.DictReader((tmp_path / "capacity.csv").open()))
    assert [(r["system"], r["calls"], r["completed"], r["failed"]) for r in rows] == [
        ("simplesip-ivr", "2", "3", "0")]
    assert "| simplesip-ivr | bench | 2 | 3 | 0 |" in (tmp_path / "capacity.md").read_text()
    assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_udp_drop_counter_counts_only_the_owner_s_full_sockets() -> None:
    import os
    import socket

    from bench.procstats import UdpDropCounter

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        ours, someone_else = UdpDropCounter(os.getpid(), port, port), UdpDropCounter(1, port, port)
        ours.reset()
        someone_else.reset()
        for _ in range(200):  # never read: the small buffer overflows
            sender.sendto(b"x" * 172, ("127.0.0.1", port))
        ours.poll()
        someone_else.poll()
        assert ours.drops > 100
        assert someone_else.drops == 0


def test_sched_probe_reads_the_kernel_s_accounting_of_a_process() -> None:
    from bench.sched_probe import machine_jiffies, schedstat, user_system

    busy_until = time.process_time() + 0.2
    while time.process_time() < busy_until:
        pass
    on_cpu, waiting, slices = schedstat(os.getpid())
    user, system = user_system(os.getpid())
    assert on_cpu >= 0.2 and waiting >= 0 and slices >= 1
    assert user + system >= 0.2
    assert len(machine_jiffies()) >= 8 and sum(machine_jiffies()) > 0


@pytest.mark.peer
@pytest.mark.timeout(60)
def test_sched_probe_measures_a_server_under_sipp_load() -> None:
    from bench.sched_probe import measure

    line = measure(calls=2, seconds=1.0, priority="normal")
    assert re.fullmatch(r"server [\d.]+ % of a core \(user [\d.]+, system [\d.]+\), run-queue wait [\d.]+ %, "
                        r"\d+ slices/s; box user \d+ system \d+ softirq \d+ idle \d+ \(of \d+\); "
                        r"late firings \d+ of (4\d|5\d)", line), line


async def test_media_bench_times_both_ways_of_reading_a_catch_up_backlog() -> None:
    from bench.media_bench import _drain_costs

    rows = await _drain_costs(20, (0, 2))  # it checks that each way reads every datagram waiting
    assert [backlog for backlog, _, _ in rows] == [0, 2]
    assert all(by_socket > 0 and by_reader > 0 for _, by_socket, by_reader in rows)
