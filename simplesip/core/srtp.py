"""SRTP (RFC 3711) for one call, keyed by SDES (RFC 4568): what is acceptable in an ``a=crypto``
line, and :class:`SrtpContext`, which protects what we send and unprotects what we receive.

The cryptography is libsrtp's, through the ``pylibsrtp`` binding; nothing here does any itself.
Still sans-IO: a context turns bytes into bytes and counts what it drops. Calls go to libsrtp
through the binding's public cffi ``lib``/``ffi`` with one buffer per call reused, rather than
through ``pylibsrtp.Session``, whose allocations per packet cost as much as the cryptography
itself (bench/srtp_bench.py).

Policies (per listener, per outbound call):

* ``off``: plain RTP; an ``RTP/SAVP`` offer is refused (488), crypto lines in an ``RTP/AVP``
  offer are ignored.
* ``optional``: we offer ``RTP/AVP`` with crypto lines (best effort, what baresip's
  ``mediaenc=srtp`` does) and use SRTP whenever the peer takes or offers a suite; a peer without
  SRTP gets plain RTP.
* ``mandatory``: we offer ``RTP/SAVP``; an offer without an acceptable crypto line is refused
  with 488, an answer without one ends the call.

Receive failures never raise: a packet that fails authentication (wrong key, forged, corrupted)
or the replay check (a copy, or older than the 128-packet window) is counted and dropped.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Sequence

import pylibsrtp

from simplesip.wire.sdp import CryptoAttribute

__all__ = [
    "MASTER_KEY_LENGTH", "SRTP_POLICIES", "SRTP_SUITES", "SrtpContext", "SrtpParams",
    "acceptable_crypto", "check_policy", "check_suites", "new_master_key",
]

logger = logging.getLogger(__name__)

#: The SDES suites we offer and accept, in our order of preference, with their libsrtp profile.
SRTP_SUITES: Final = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
_PROFILES: Final = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
SRTP_POLICIES: Final = ("off", "optional", "mandatory")
#: Both suites: a 128-bit master key and a 112-bit master salt, sent concatenated (RFC 4568 §6.1).
MASTER_KEY_LENGTH: Final = 30


def check_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`SRTP_POLICIES`; ValueError otherwise."""
    if policy not in SRTP_POLICIES:
        raise ValueError(f"SRTP policy must be one of {', '.join(SRTP_POLICIES)}, not {policy!r}")
    return policy


def check_suites(suites: Sequence[str]) -> tuple[str, ...]:
    """``suites`` as a tuple if every one is supported and there is at least one."""
    unknown = [suite for suite in suites if suite not in _PROFILES]
    if unknown or not suites:
        raise ValueError(f"SRTP suites must be among {', '.join(SRTP_SUITES)}, not {list(suites)!r}")
    return tuple(suites)


def new_master_key() -> bytes:
    """A fresh master key and salt from the operating system's CSPRNG."""
    return secrets.token_bytes(MASTER_KEY_LENGTH)


def acceptable_crypto(crypto: CryptoAttribute, suites: Sequence[str] = SRTP_SUITES) -> bool:
    """Whether we can run ``crypto``: a suite of ``suites``, one inline key of the right length,
    no MKI and no session parameters (UNENCRYPTED_SRTP, KDR, FEC_ORDER... are not supported).
    A lifetime is accepted and not enforced: a call never comes near 2^31 packets."""
    return (crypto.suite in suites and crypto.suite in _PROFILES and len(crypto.keys) == 1
            and len(crypto.key_salt) == MASTER_KEY_LENGTH and crypto.keys[0].mki is None
            and not crypto.session_params)


@dataclass(frozen=True)
class SrtpParams:
    """What offer/answer settled for SRTP: the suite, our sending key and the peer's sending key
    (each master key followed by its salt). The keys stay out of ``repr``: they end up in logs."""

    suite: str
    local_key: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.suite not in _PROFILES:
            raise ValueError(f"unsupported SRTP suite {self.suite!r}")
        if len(self.local_key) != MASTER_KEY_LENGTH or len(self.remote_key) != MASTER_KEY_LENGTH:
            raise ValueError(f"SRTP master key and salt must be {MASTER_KEY_LENGTH} bytes")


_ffi, _lib = pylibsrtp.ffi, pylibsrtp.lib
#: libsrtp's status codes (srtp_err_status_t) that name a failure we count apart.
_AUTH_FAIL: Final = pylibsrtp.ERRORS.index("authentication failure")
_REPLAY_FAILS: Final = frozenset({pylibsrtp.ERRORS.index("replay check failed (bad index)"),
                                  pylibsrtp.ERRORS.index("replay check failed (index too old)")})
_srtp_protect, _srtp_unprotect = _lib.srtp_protect, _lib.srtp_unprotect
_srtp_protect_rtcp, _srtp_unprotect_rtcp = _lib.srtp_protect_rtcp, _lib.srtp_unprotect_rtcp
_UNPROTECT_ADDRESS: Final = int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, "srtp_unprotect")))
_PROTECT_ADDRESS: Final = int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, "srtp_protect")))
#: The SRTP authentication tag's length in octets, per suite (RFC 4568 §6.2.1).
_TAG_LENGTHS: Final = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}
_BUFFER_SIZE: Final = 1500
#: The largest packet handed to libsrtp: room is left for the longest trailer it may append.
_MAX_PACKET: Final = _BUFFER_SIZE - pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN


def _libsrtp_session(suite: str, key: bytes, inbound: bool) -> tuple[Any, Any]:
    """A libsrtp session (``srtp_t``) for one direction of a call, freed when collected. Made
    with the binding's cffi functions as ``pylibsrtp.Session`` makes one; libsrtp derives the
    session keys at creation, so the policy and key buffers need not outlive this call."""
    policy = _ffi.new("srtp_policy_t *")
    profile = _PROFILES[suite]
    _check(_lib.srtp_crypto_policy_set_from_profile_for_rtp(_ffi.addressof(policy.rtp), profile))
    _check(_lib.srtp_crypto_policy_set_from_profile_for_rtcp(_ffi.addressof(policy.rtcp), profile))
    key_buffer = _ffi.new("unsigned char[]", key)
    policy.key = key_buffer
    policy.ssrc.type = _lib.ssrc_any_inbound if inbound else _lib.ssrc_any_outbound
    session = _ffi.new("srtp_t *")
    _check(_lib.srtp_create(session, policy))
    owner = _ffi.gc(session, lambda created: _lib.srtp_dealloc(created[0]))
    return owner[0], owner  # the srtp_t, and what must be kept alive for it


def _check(status: int) -> None:
    if status:
        raise ValueError(f"libsrtp: {_reason(status)}")


class SrtpContext:
    """One call's SRTP and SRTCP, both directions, with counters of what was dropped.

    ``protect``/``protect_rtcp`` return b"" if libsrtp refuses (a packet too large): the caller
    sends nothing rather than clear text. ``unprotect``/``unprotect_rtcp`` return None for a
    packet that fails, counted in ``auth_failures`` (the authentication tag does not match: a
    wrong key, a forged or corrupted packet), ``replay_failures`` (replay check) or ``malformed``
    (anything else, e.g. too short to carry the SRTP trailer: baresip's clear RTCP "PING" sent
    before its SRTP starts).
    """

    def __init__(self, params: SrtpParams) -> None:
        self.params = params
        # Sending sessions by (suite, key): a renegotiation back to a key used before continues
        # its session, so no packet index is ever encrypted twice under one key.
        self._senders: dict[tuple[str, bytes], tuple[Any, Any]] = {}
        self._tx, self._tx_owner = self._sender(params)
        self._rx, self._rx_owner = _libsrtp_session(params.suite, params.remote_key, inbound=True)
        # One buffer for both directions: calls are handled one packet at a time, and one buffer
        # per call (not per direction) keeps hundreds of calls' buffers out of each other's cache.
        self._buffer = _ffi.new("char[]", _BUFFER_SIZE)
        self._view = _ffi.buffer(self._buffer)
        self._length = _ffi.new("int *")
        self.auth_failures = 0
        self.replay_failures = 0
        self.malformed = 0
        self.protect_failures = 0
        #: Called after :meth:`update` replaced a libsrtp session: whoever holds
        #: :meth:`native_handles` (the compiled media path) takes them again.
        self.on_rekey: Callable[[], None] | None = None

    @property
    def suite(self) -> str:
        return self.params.suite

    def _sender(self, params: SrtpParams) -> tuple[Any, Any]:
        key = (params.suite, params.local_key)
        if key not in self._senders:
            self._senders[key] = _libsrtp_session(params.suite, params.local_key, inbound=False)
        return self._senders[key]

    def update(self, params: SrtpParams) -> None:
        """Follow a renegotiation: new keys or suite take effect, unchanged ones keep their
        state (the receiver's replay window, the sender's packet index)."""
        if params == self.params:
            return
        if (params.suite, params.remote_key) != (self.params.suite, self.params.remote_key):
            self._rx, self._rx_owner = _libsrtp_session(params.suite, params.remote_key, inbound=True)
        self._tx, self._tx_owner = self._sender(params)
        self.params = params
        if self.on_rekey is not None:
            self.on_rekey()

    # The four below are the per-packet path: written out rather than sharing a helper, which
    # would cost a Python call per packet.

    def protect(self, packet: bytes) -> bytes:
        size = len(packet)
        if size > _MAX_PACKET:
            self._protect_failed(-1)
            return b""
        self._view[0:size] = packet
        self._length[0] = size
        status = _srtp_protect(self._tx, self._buffer, self._length)
        if status:
            self._protect_failed(status)
            return b""
        return self._view[0:self._length[0]]

    def protect_rtcp(self, packet: bytes) -> bytes:
        size = len(packet)
        if size > _MAX_PACKET:
            self._protect_failed(-1)
            return b""
        self._view[0:size] = packet
        self._length[0] = size
        status = _srtp_protect_rtcp(self._tx, self._buffer, self._length)
        if status:
            self._protect_failed(status)
            return b""
        return self._view[0:self._length[0]]

    def unprotect(self, data: bytes) -> bytes | None:
        size = len(data)
        if size > _MAX_PACKET:
            self._count(-1)
            return None
        self._view[0:size] = data
        self._length[0] = size
        status = _srtp_unprotect(self._rx, self._buffer, self._length)
        if status:
            self._count(status)
            return None
        return self._view[0:self._length[0]]

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        size = len(data)
        if size > _MAX_PACKET:
            self._count(-1)
            return None
        self._view[0:size] = data
        self._length[0] = size
        status = _srtp_unprotect_rtcp(self._rx, self._buffer, self._length)
        if status:
            self._count(status)
            return None
        return self._view[0:self._length[0]]

    def _protect_failed(self, status: int) -> None:
        self.protect_failures += 1
        logger.debug("SRTP protect failed: %s", _reason(status))

    def _count(self, status: int) -> None:
        if status in _REPLAY_FAILS:
            self.replay_failures += 1
        elif status == _AUTH_FAIL:
            self.auth_failures += 1
        else:
            self.malformed += 1
            logger.debug("SRTP: dropped an unreadable packet (%s)", _reason(status))
            return
        failures = self.auth_failures + self.replay_failures
        if failures & (failures - 1) == 0:  # 1, 2, 4, 8...: visible without flooding the log
            logger.info("SRTP: dropped a packet (%s); %d auth and %d replay failures so far",
                        _reason(status), self.auth_failures, self.replay_failures)

    def native_handles(self) -> tuple[int, int, int, int, int]:
        """``(rx, tx, unprotect, protect, tag)`` for the compiled media path
        (``simplesip.core.native``): this call's receiving and sending libsrtp sessions and
        libsrtp's ``srtp_unprotect``/``srtp_protect``, as addresses, and the length of the RTP
        authentication tag. The sessions are valid while this context holds them: :meth:`update`
        replaces them on a new key, and calls :attr:`on_rekey` so the holder takes them again."""
        return (int(_ffi.cast("uintptr_t", self._rx)), int(_ffi.cast("uintptr_t", self._tx)),
                _UNPROTECT_ADDRESS, _PROTECT_ADDRESS, _TAG_LENGTHS[self.params.suite])

    def stats(self) -> dict[str, int]:
        """The counters as RtpSession.stats() reports them."""
        return {"srtp": 1, "srtp_auth_failures": self.auth_failures,
                "srtp_replay_failures": self.replay_failures, "srtp_malformed": self.malformed}


def _reason(status: int) -> str:
    if 0 <= status < len(pylibsrtp.ERRORS):
        return pylibsrtp.ERRORS[status]
    return "packet too large" if status == -1 else f"libsrtp status {status}"
