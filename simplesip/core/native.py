"""The one place that chooses the compiled media path (:mod:`simplesip.core._native`) or the
pure-Python reference.

The extension is built from ``simplesip/core/_native.c`` by the package's own build (``pip install
.`` with a C compiler). It is used when it imports, unless ``SIMPLESIP_PURE_PYTHON`` is set to
anything but ``0`` (tests and benchmarks compare the two paths). :data:`ENABLED` says which path
new sessions take (:class:`~simplesip.core.rtpsession.RtpSession` picks its class from it);
:data:`native` is the extension module (None when it is absent), :data:`REASON` why not.

:class:`NativeCore` is the extension's per-call ``Core`` with the Python-side conveniences of
:class:`~simplesip.core.jitter.JitterBuffer` and its :class:`~simplesip.core.rtpstats.ReceiveStats`
(``stats``, ``as_dict``...), so an RtpSession can use it where it used its jitter buffer.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from simplesip.core import jitter
from simplesip.core.rtpstats import ReceiveFigures
from simplesip.wire import g711

__all__ = ["ENABLED", "REASON", "NativeCore", "native", "pure_python_forced"]

logger = logging.getLogger(__name__)


def pure_python_forced() -> bool:
    """True when ``SIMPLESIP_PURE_PYTHON`` asks for the pure-Python path."""
    return os.environ.get("SIMPLESIP_PURE_PYTHON", "") not in ("", "0")


def _load() -> tuple[Any, str]:
    try:
        from simplesip.core import _native as module
    except ImportError as exc:  # not built (no compiler at install time): the reference path
        return None, f"extension not importable: {exc}"
    # The very tables of the Python reference, so both paths decode, encode and conceal alike.
    quiet = {codec: np.zeros(256, dtype=np.uint8) for codec in ("PCMU", "PCMA")}
    for codec, codes in jitter._QUIET_CODES.items():
        quiet[codec][np.frombuffer(codes, dtype=np.uint8)] = 1
    module.set_tables(
        g711._ULAW_DECODE.astype("=i2").tobytes(), g711._ALAW_DECODE.astype("=i2").tobytes(),
        g711._ULAW_ENCODE.tobytes(), g711._ALAW_ENCODE.tobytes(),
        quiet["PCMU"].tobytes(), quiet["PCMA"].tobytes(),
        b"".join(jitter._ATTENUATE["PCMU"]), b"".join(jitter._ATTENUATE["PCMA"]),
    )
    return module, ""


native, REASON = _load()
#: True when new RtpSessions take the compiled path.
ENABLED: bool = native is not None and not pure_python_forced()
if native is not None and not ENABLED:
    REASON = "SIMPLESIP_PURE_PYTHON is set"


if native is not None:

    class NativeCore(ReceiveFigures, native.Core):  # type: ignore[name-defined,misc]
        """A call's compiled media state, with JitterBuffer's and ReceiveStats' Python API (the
        derived figures are :class:`~simplesip.core.rtpstats.ReceiveFigures`')."""

        __slots__ = ()

        @property
        def stats(self) -> "NativeCore":
            """The receive statistics: the object itself (ReceiveStats' attributes are its own)."""
            return self

        @property
        def codec(self) -> str:
            """The law of the buffered codes (PCMU or PCMA), as JitterBuffer.codec."""
            return "PCMA" if self.jitter_alaw else "PCMU"

        @codec.setter
        def codec(self, codec: str) -> None:
            self.jitter_alaw = g711.normalize_codec(codec) == "PCMA"

else:
    NativeCore = None  # type: ignore[assignment,misc]
