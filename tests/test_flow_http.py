"""The `http` action against a local HTTP server: ok, error 500, timeout with filler audio."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from ivr.flows import run_simulation


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/slow"):
            time.sleep(2.0)
        if self.path.startswith("/fail"):
            self._reply(500, b'{"error": "boom"}')
            return
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self._reply(200, json.dumps({"name": "Alice", "balance": 42}).encode())

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(json.loads(body))  # type: ignore[attr-defined]
        self._reply(200, b'{"ticket": 7}')

    def _reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (the timeout test)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


FLOW = """\
    start: ask
    nodes:
      ask:
        http: {{{request}, timeout: {timeout}, save_as: customer, filler: {{tone: "440", duration: 200ms}}}}
        on: {{ok: good, error: bad, timeout: slow}}
      good: {{play: {{say: "Hello {{{{ vars.customer.name }}}}"}}, next: bye}}
      bad: {{hangup: }}
      slow: {{hangup: }}
      bye: {{hangup: }}
"""


def run(tmp_path: Path, server: ThreadingHTTPServer, request: str, timeout: str = "3s"):
    base = f"http://127.0.0.1:{server.server_address[1]}"
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(FLOW.format(request=request, timeout=timeout)))
    return run_simulation(path, caller="sip:1001@127.0.0.1", config={"api": base})


def test_ok_saves_the_json_reply(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    result = run(tmp_path, server, 'url: "{{ config.api }}/customer?number={{ call.from | urlencode }}"')
    assert result.vars["customer"] == {"name": "Alice", "balance": 42}
    assert result.vars["http_status"] == 200
    assert server.seen == ["/customer?number=1001"]  # type: ignore[attr-defined]
    assert any(e.event == "play" and "Hello Alice" in e.detail for e in result.trace)


def test_post_sends_the_templated_json_body(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    result = run(tmp_path, server, 'url: "{{ config.api }}/tickets", json: {caller: "{{ call.from }}", n: 3}')
    assert server.seen == [{"caller": "1001", "n": 3}]  # type: ignore[attr-defined]
    assert result.vars["customer"] == {"ticket": 7}


def test_status_500_is_error(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    result = run(tmp_path, server, 'url: "{{ config.api }}/fail"')
    assert [e.detail for e in result.trace if e.event == "outcome"][0] == "error"
    assert result.vars["http_status"] == 500
    assert "customer" not in result.vars


def test_unreachable_server_is_error(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    result = run(tmp_path, server, 'url: "http://127.0.0.1:9/nothing-listens-here"')
    assert [e.detail for e in result.trace if e.event == "outcome"][0] == "error"


def test_timeout_loops_the_filler_until_it_gives_up(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    began = time.monotonic()
    result = run(tmp_path, server, 'url: "{{ config.api }}/slow"', timeout="700ms")
    assert [e.detail for e in result.trace if e.event == "outcome"][0] == "timeout"
    fillers = [e for e in result.trace if e.event == "filler"]
    assert len(fillers) >= 3  # 200 ms of filler, looped for 700 ms
    timed_out_at = [e.time for e in result.trace if e.event == "outcome"][0]
    assert 0.7 <= timed_out_at < 1.2
    assert time.monotonic() - began < 2.0  # gave up without waiting for the slow reply
