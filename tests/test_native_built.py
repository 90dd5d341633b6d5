"""The compiled media path is built and chosen in the test environment (make test, .ci/run).

Not skipped when the extension is missing (tests/test_media_native.py is): a build that silently
fell back to the pure-Python path must fail the suite.
"""

from __future__ import annotations

from simplesip.core import native
from simplesip.core.rtpsession import NativeRtpSession, RtpSession


def test_the_extension_is_built_and_chosen() -> None:
    """The test environment (make test, .ci/run) builds the extension: the suite must never fall
    back to the pure path silently. SIMPLESIP_PURE_PYTHON=1 forces the fallback on purpose."""
    assert native.native is not None, native.REASON
    assert native.ENABLED == (not native.pure_python_forced())
    session = RtpSession(0, "PCMU", ("127.0.0.1", 4000))
    assert isinstance(session, NativeRtpSession) == native.ENABLED
    assert type(RtpSession(0, "PCMU", None, native=False)) is RtpSession
    assert type(RtpSession(0, "PCMU", None, native=True)) is NativeRtpSession
