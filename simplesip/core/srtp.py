"""SRTP (RFC 3711) for one call, keyed by SDES (RFC 4568): what is acceptable in an ``a=crypto``
line, and :class:`SrtpContext`, which protects what we send and unprotects what we receive.

The cryptography is libsrtp's, through the ``pylibsrtp`` binding; nothing here does any itself.
Still sans-IO: a context turns bytes into bytes and counts what it drops.

Policies (per listener, per outbound call):

* ``off``: plain RTP; an ``RTP/SAVP`` offer is refused (488), crypto lines in an ``RTP/AVP``
  offer are ignored.
* ``optional``: we offer ``RTP/AVP`` with crypto lines (best effort, what baresip's
  ``mediaenc=srtp`` does) and use SRTP whenever the peer takes or offers a suite; a peer without
  SRTP gets plain RTP.
* ``mandatory``: we offer ``RTP/SAVP``; an offer without an acceptable crypto line is refused
  with 488, an answer without one ends the call.

Receive failures never raise: a packet that fails authentication (wrong key, forged, corrupted)
or the replay check (a copy, or older than the 64-packet window) is counted and dropped.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Final, Sequence

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


def _session(suite: str, key: bytes, inbound: bool) -> pylibsrtp.Session:
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=_PROFILES[suite]))


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
        self._senders: dict[tuple[str, bytes], pylibsrtp.Session] = {}
        self._tx = self._sender(params)
        self._rx = _session(params.suite, params.remote_key, inbound=True)
        self.auth_failures = 0
        self.replay_failures = 0
        self.malformed = 0
        self.protect_failures = 0

    @property
    def suite(self) -> str:
        return self.params.suite

    def _sender(self, params: SrtpParams) -> pylibsrtp.Session:
        key = (params.suite, params.local_key)
        if key not in self._senders:
            self._senders[key] = _session(params.suite, params.local_key, inbound=False)
        return self._senders[key]

    def update(self, params: SrtpParams) -> None:
        """Follow a renegotiation: new keys or suite take effect, unchanged ones keep their
        state (the receiver's replay window, the sender's packet index)."""
        if params == self.params:
            return
        if (params.suite, params.remote_key) != (self.params.suite, self.params.remote_key):
            self._rx = _session(params.suite, params.remote_key, inbound=True)
        self._tx = self._sender(params)
        self.params = params

    def protect(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            self.protect_failures += 1
            logger.debug("SRTP protect failed: %s", exc)
            return b""

    def protect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            self.protect_failures += 1
            logger.debug("SRTCP protect failed: %s", exc)
            return b""

    def unprotect(self, data: bytes) -> bytes | None:
        try:
            return self._rx.unprotect(data)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            self._count(exc)
            return None

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        try:
            return self._rx.unprotect_rtcp(data)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            self._count(exc)
            return None

    def _count(self, exc: Exception) -> None:
        reason = str(exc)
        if "replay" in reason:
            self.replay_failures += 1
        elif "authentication" in reason:
            self.auth_failures += 1
        else:
            self.malformed += 1
            logger.debug("SRTP: dropped an unreadable packet (%s)", reason)
            return
        failures = self.auth_failures + self.replay_failures
        if failures & (failures - 1) == 0:  # 1, 2, 4, 8...: visible without flooding the log
            logger.info("SRTP: dropped a packet (%s); %d auth and %d replay failures so far",
                        exc, self.auth_failures, self.replay_failures)

    def stats(self) -> dict[str, int]:
        return {"srtp": 1, "srtp_auth_failures": self.auth_failures,
                "srtp_replay_failures": self.replay_failures, "srtp_malformed": self.malformed}
