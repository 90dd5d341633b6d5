"""The ``http`` action: a templated request, its JSON reply saved in a variable, with filler
audio looped to the caller while the reply is awaited."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any

import httpx

from ivr.call import DtmfEvent, PlaybackDone
from ivr.flows.registry import ActionSpec
from ivr.flows.session import FlowSession
from ivr.flows.templating import render_deep

log = logging.getLogger(__name__)

# One client (one connection pool) per event loop: an IVR makes many small requests and
# building a client per request costs an SSL context each time.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def _client(loop: asyncio.AbstractEventLoop) -> httpx.AsyncClient:
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _clients[loop] = httpx.AsyncClient(follow_redirects=False)
    return client


async def http_action(session: FlowSession, params: dict[str, Any]) -> str:
    """Send the request; outcomes ``ok`` (2xx), ``error`` (other status, unreachable, not
    JSON), ``timeout``, ``hangup``. ``vars[save_as]`` gets the decoded JSON reply and
    ``vars["http_status"]`` the status code (0 when there was none)."""
    context = session.template_context()
    url = str(session.render(params["url"]))
    body_json = render_deep(params["json"], context) if "json" in params else None
    body = session.render(params["body"]) if "body" in params else None
    method = params.get("method", "POST" if body_json is not None or body is not None else "GET")
    headers = render_deep(params.get("headers") or {}, context)
    timeout = session.duration(params, "timeout", 5.0)
    filler = params.get("filler")
    session.trace("http", f"{method} {url}")
    if filler is not None:
        await session.ensure_answered()
    request = asyncio.ensure_future(
        _client(session.loop).request(
            method, url, headers=headers, json=body_json, content=body, timeout=timeout + 1.0
        )
    )
    try:
        reply = await session.run_io(_await_with_filler(session, request, filler, timeout))
    finally:
        if not request.done():
            request.cancel()
    session.vars["http_status"] = 0
    if reply is None:
        session.trace("http", f"no reply within {timeout:g}s")
        return "timeout"
    if isinstance(reply, BaseException):
        session.trace("http", f"failed: {reply!r}")
        return "error"
    session.vars["http_status"] = reply.status_code
    if not 200 <= reply.status_code < 300:
        session.trace("http", f"status {reply.status_code}")
        return "error"
    try:
        data = reply.json() if reply.content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        session.trace("http", "reply is not JSON")
        return "error"
    if params.get("save_as"):
        session.vars[params["save_as"]] = data
    session.trace("http", f"status {reply.status_code}")
    return "ok"


async def _await_with_filler(
    session: FlowSession, request: asyncio.Future, filler: Any, timeout: float
) -> httpx.Response | BaseException | None:
    """The reply (or the exception raised instead) or ``None`` on timeout, looping ``filler``."""
    deadline = session.loop.time() + timeout
    playing: int | None = None
    try:
        while not request.done():
            remaining = deadline - session.loop.time()
            if remaining <= 0:
                return None
            if filler is not None and playing is None:
                items = session.play_items(filler)
                for item in items:
                    session.call.play(item)
                playing = items[-1].id
                session.trace("filler", "playing")
            event = await session.next_event(remaining, until=request)
            if isinstance(event, PlaybackDone) and event.item_id == playing:
                playing = None
            elif isinstance(event, DtmfEvent):
                session.typeahead.append(event.digit)
    finally:
        if playing is not None and not session.caller_gone:
            session.call.stop_playback()
    exc = request.exception()
    return exc if exc is not None else request.result()


SPECS = [
    ActionSpec("http", http_action, outcomes=("ok", "error", "timeout", "hangup"), needs_media=False,
               renders_params=False),
]
