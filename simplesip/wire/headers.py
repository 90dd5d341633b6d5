"""SIP header fields: the ordered, case-insensitive :class:`Headers` multi-dict, compact forms and
canonical names (RFC 3261 §7.3), and the default reason phrases."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from simplesip.errors import SIPParseError
from simplesip.wire.grammar import split_list

__all__ = ["COMPACT_FORMS", "REASONS", "Headers", "canonical_header_name", "default_reason"]

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"

# RFC 3261 §7.3.3 and the RFCs that registered the others (3515, 3265/6665, 3892, 3841, 4028, 8224)
COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To",
    "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
_KNOWN_NAMES = (
    "Accept Accept-Contact Accept-Encoding Accept-Language Alert-Info Allow Allow-Events "
    "Authentication-Info Authorization Call-ID Call-Info Contact Content-Disposition "
    "Content-Encoding Content-Language Content-Length Content-Type CSeq Date Error-Info Event "
    "Expires From History-Info Identity In-Reply-To Max-Forwards MIME-Version Min-Expires Min-SE "
    "Organization P-Asserted-Identity P-Preferred-Identity Path Priority Privacy Proxy-Authenticate "
    "Proxy-Authorization Proxy-Require RAck Reason Record-Route Refer-To Referred-By Reject-Contact "
    "Replaces Reply-To Request-Disposition Require Retry-After Route RSeq Server Service-Route "
    "Session-Expires SIP-ETag SIP-If-Match Subject Subscription-State Supported Timestamp To "
    "Unsupported User-Agent Via Warning WWW-Authenticate"
).split()
_CANONICAL = {name.lower(): name for name in _KNOWN_NAMES}
_CANONICAL.update(COMPACT_FORMS)
# Headers whose grammar is a comma list (RFC 3261 §7.3.1).  Deliberately absent: the auth headers
# (their challenges contain commas), Date (its value contains one), and every unknown header.
_LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept Accept-Contact Accept-Encoding Accept-Language Alert-Info Allow Allow-Events "
        "Call-Info Contact Content-Encoding Content-Language Error-Info History-Info In-Reply-To "
        "P-Asserted-Identity P-Preferred-Identity Path Proxy-Require Reason Record-Route "
        "Reject-Contact Request-Disposition Require Route Service-Route Supported Unsupported Via "
        "Warning"
    ).split()
)
_HEADER_NAME_RE = re.compile(_TOKEN)


def canonical_header_name(name: str) -> str:
    """Full, conventionally cased name for compact forms and known headers; others unchanged."""
    return _CANONICAL.get(name.lower(), name)


class Headers:
    """Ordered multi-dict of header fields; names are case-insensitive and compact forms expand.

    Each entry is one header line as received or added.  ``get_all`` splits comma-joined values
    of list-grammar headers (Via, Route, Contact...), never of others (WWW-Authenticate, Date...).
    """

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] | Headers = ()) -> None:
        self._items: list[tuple[str, str]] = []
        pairs = items.items() if isinstance(items, (Mapping, Headers)) else items
        for name, value in pairs:
            self.add(name, value)

    @staticmethod
    def _check(name: str, value: str) -> tuple[str, str]:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise SIPParseError(f"bad header name {name[:40]!r}")
        value = str(value).strip(" \t\r")
        if "\r" in value or "\n" in value:  # would inject a header line on serialising
            raise SIPParseError(f"CR or LF inside the value of {name}")
        return canonical_header_name(name), value

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first ``name`` line (unsplit), or ``default``."""
        key = canonical_header_name(name).lower()
        for item_name, value in self._items:
            if item_name.lower() == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, comma lists split for list-grammar headers."""
        key = canonical_header_name(name).lower()
        values = [value for item_name, value in self._items if item_name.lower() == key]
        if key in _LIST_HEADERS:
            return [part for value in values for part in split_list(value)]
        return values

    def add(self, name: str, value: str) -> None:
        """Append a header line (after any existing lines of any name)."""
        self._items.append(self._check(name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one, at the position of the first (or at the end)."""
        name, value = self._check(name, value)
        key = name.lower()
        position = next((i for i, (n, _) in enumerate(self._items) if n.lower() == key), None)
        self.remove(name)
        self._items.insert(len(self._items) if position is None else position, (name, value))

    def remove(self, name: str) -> None:
        """Remove every ``name`` line; absent names are fine."""
        key = canonical_header_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) line in order."""
        return list(self._items)

    def copy(self) -> Headers:
        """An independent copy."""
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._items] == [(n.lower(), v) for n, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity Info", 437: "Unsupported Credential", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip


def default_reason(status: int) -> str:
    """The RFC reason phrase for ``status``, or a generic one for its class."""
    if status in REASONS:
        return REASONS[status]
    return REASONS.get(status // 100 * 100, "Unknown")
