"""Shared start-up for the atheris harnesses in this folder.

Each harness calls :func:`main` with its one-input function; command-line arguments go to
libFuzzer unchanged (``-runs=N``, ``-max_len=N``, corpus folders...). The project root is put on
``sys.path`` so a harness runs from a checkout without installing the package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


#: Set to 1 to keep fuzzing past bugs already reported (each harness lists its own, with the
#: owner and the regression test). atheris cannot fork, so without this the first known crash
#: ends the run and the harness never reaches the code behind it.
SUPPRESS_ENV = "FUZZ_SUPPRESS_KNOWN"


def main(test_one_input: Callable[[bytes], None],
         known_issues: Sequence[tuple[type[BaseException], str]] = ()) -> None:
    """Hand ``test_one_input`` to libFuzzer; never returns while fuzzing.

    ``known_issues`` are ``(exception type, text in its message)`` pairs that are swallowed
    when ``FUZZ_SUPPRESS_KNOWN=1``; by default every exception is a crash.
    """
    import atheris

    target = test_one_input
    if known_issues and os.environ.get(SUPPRESS_ENV) == "1":
        def target(data: bytes) -> None:
            try:
                test_one_input(data)
            except Exception as exc:
                if not any(isinstance(exc, kind) and text in str(exc) for kind, text in known_issues):
                    raise

    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
