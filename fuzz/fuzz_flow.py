"""atheris harness: the flow loader (YAML with positions, JSON Schema, checker, sub-flows).

Contract under test: ``load_flow`` returns a Flow or raises :class:`FlowError` carrying at least
one ``file:line:col`` diagnostic. Inputs are written to one file in a private temporary folder
(put TMPDIR on a tmpfs for speed).

    python fuzz/fuzz_flow.py -runs=100000 -max_len=2048 fuzz/corpus/flow
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import atheris

import _common

with atheris.instrument_imports():
    import yaml

    from ivr.flows import FlowError, load_flow

_FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-flow-"))
_PATH = _FOLDER / "flow.yaml"


def test_one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    try:
        load_flow(_PATH)
    except FlowError as exc:
        assert exc.diagnostics, "FlowError without a diagnostic"


#: Reported to the owner of ivr/flows/loader.py and checker.py; regressions in
#: tests/test_fuzz_flows.py (control characters, empty file).
KNOWN_ISSUES = [(yaml.reader.ReaderError, "unacceptable character"),
                (AssertionError, "FlowError without a diagnostic")]

if __name__ == "__main__":
    _common.main(test_one_input, KNOWN_ISSUES)
