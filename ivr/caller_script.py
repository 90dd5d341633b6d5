"""The caller's script of key presses, as ``ivr call --dtmf`` and ``ivr simulate --dtmf`` read it.

Tokens separated by spaces, times counted from the answer (``ivr simulate``: from the call's
arrival, which is when a flow answers): a token of keys (``1``, ``2#``) presses them at the
current time, one after another; ``+2s`` / ``+500ms`` moves time forward; ``@5.5`` moves it to
5.5 s; ``hangup`` hangs up. ``"+3s 1 +1s 2#"`` presses 1 at 3 s, then 2 and # at 4 s.
"""

from __future__ import annotations

import re

from ivr.audio import parse_duration

__all__ = ["KEYS", "parse_dtmf_script"]

#: A token of keys.
KEYS = re.compile(r"^[0-9*#A-D]+$")


def parse_dtmf_script(script: str) -> list[tuple[float, str]]:
    """``"1 +2s 2# @10 hangup"`` -> ``[(0, "1"), (2, "2"), (2, "#"), (10, "hangup")]``: (seconds
    from the answer, key or ``hangup``); ``ValueError`` names a token it cannot read."""
    now = 0.0
    events = []
    for token in script.split():
        try:
            if token.startswith("+"):
                now += parse_duration(token[1:])
                continue
            if token.startswith("@"):
                now = parse_duration(token[1:])
                continue
        except ValueError:
            raise ValueError(f"bad DTMF script time {token!r} (e.g. +2s, +500ms, @5.5)") from None
        if token.lower() == "hangup":
            events.append((now, "hangup"))
        elif KEYS.match(token.upper()):
            events.extend((now, key) for key in token.upper())
        else:
            raise ValueError(f"bad DTMF script token {token!r} (keys, +2s, @5.5 or hangup)")
    return events
