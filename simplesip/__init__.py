"""simplesip: a SIP user agent library.

Layers, bottom up: wire formats (``message``, ``uri``, ``sdp``, ``rtp``, ``g711``, ``dtmf``),
the sans-IO protocol core (``transaction``, ``dialog``, ``useragent``, ``rtpsession``), the asyncio
shell (``transport``, ``endpoint`` with its one media clock) and the synchronous
:class:`SimpleSIPClient` facade. See docs/simplesip.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from simplesip.errors import (
    AuthenticationError,
    CallError,
    ConnectionError,
    LocationError,
    SIPParseError,
)

if TYPE_CHECKING:
    from simplesip.aio.call import Call, CallState
    from simplesip.aio.endpoint import Endpoint
    from simplesip.aio.endpoint_config import EndpointConfig
    from simplesip.client import SimpleSIPClient
    from simplesip.wire.g711 import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm

# Imported on first use, so that ``import simplesip.wire.message`` (or the g711 codec alone) does not
# pull in asyncio, numpy and the whole stack.
_LAZY = {
    "Call": "simplesip.aio.call", "CallState": "simplesip.aio.call", "SimpleSIPClient": "simplesip.client",
    "Endpoint": "simplesip.aio.endpoint", "EndpointConfig": "simplesip.aio.endpoint_config",
    "alaw_to_pcm": "simplesip.wire.g711", "pcm_to_alaw": "simplesip.wire.g711",
    "pcm_to_ulaw": "simplesip.wire.g711", "ulaw_to_pcm": "simplesip.wire.g711",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'simplesip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "AuthenticationError",
    "Call",
    "CallError",
    "CallState",
    "ConnectionError",
    "Endpoint",
    "EndpointConfig",
    "LocationError",
    "SIPParseError",
    "SimpleSIPClient",
    "alaw_to_pcm",
    "pcm_to_alaw",
    "pcm_to_ulaw",
    "ulaw_to_pcm",
]

__version__ = "0.2.0"
