"""The ``tts`` plugin: text to speech with espeak-ng, cached on disk.

``ivr_tts(text, options)`` returns the path of a WAV file (espeak-ng writes 22.05 kHz mono; the
playback plugin resamples). Files are named by a hash of (text, voice, rate), so a phrase is
synthesised once per cache folder and later calls return at once. The playback plugin calls this
from a worker thread; a first synthesis takes espeak-ng's start-up plus about a tenth of the
speech's length.

Configuration (``plugins.tts``): ``cache_dir`` (default ``$XDG_CACHE_HOME/simplesip-ivr/tts``,
else ``~/.cache/simplesip-ivr/tts``), ``voice`` (default ``en-us``), ``rate`` (words per minute,
default 160), ``timeout`` (s, default 30), ``command`` (default ``espeak-ng``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ivr import hookimpl

log = logging.getLogger(__name__)

NAME = "tts"


def default_cache_dir() -> Path:
    """Where synthesised speech goes when the configuration does not say."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simplesip-ivr" / "tts"


_DEFAULTS: dict[str, Any] = {
    "cache_dir": None,
    "voice": "en-us",
    "rate": 160,
    "timeout": 30.0,
    "command": "espeak-ng",
}
_settings: dict[str, Any] = dict(_DEFAULTS)


@hookimpl
def ivr_configure(config: dict[str, Any]) -> None:
    """Read ``plugins.tts``."""
    section = (config.get("plugins") or {}).get(NAME) or {}
    _settings.update({key: section.get(key, default) for key, default in _DEFAULTS.items()})


def cache_path(text: str, voice: str, rate: int) -> Path:
    """The file a phrase is (or will be) cached in."""
    key = hashlib.sha256(f"{voice}\0{rate}\0{text}".encode()).hexdigest()[:32]
    folder = Path(_settings["cache_dir"]) if _settings["cache_dir"] else default_cache_dir()
    return folder / f"{key}.wav"


def synthesise(text: str, voice: str | None = None, rate: int | None = None) -> Path:
    """Speak ``text`` into a cached WAV file and return its path (blocking)."""
    voice = str(voice or _settings["voice"])
    rate = int(rate or _settings["rate"])
    if voice.startswith("-"):
        raise ValueError(f"invalid voice name {voice!r}")
    path = cache_path(text, voice, rate)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # write next to the target, then rename: two threads (or processes sharing the folder)
    # synthesising the same phrase never see a half-written file
    fd, partial = tempfile.mkstemp(prefix=".tts-", suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        command = [str(_settings["command"]), "-v", voice, "-s", str(rate), "-w", partial, "--", text]
        result = subprocess.run(command, capture_output=True, timeout=float(_settings["timeout"]))
        if result.returncode != 0 or os.path.getsize(partial) <= 44:
            message = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"espeak-ng failed ({result.returncode}): {message}")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    log.debug("synthesised %d characters with voice %s to %s", len(text), voice, path)
    return path


@hookimpl
def ivr_tts(text: str, options: dict[str, Any]) -> str | None:
    """Synthesise ``text`` (options ``voice``, ``rate``) and return the WAV path."""
    if not text.strip():
        return None
    options = options or {}
    return str(synthesise(text, options.get("voice"), options.get("rate")))
