"""Mutation testing of the protocol and media core with mutmut (``make mutate``; docs/testing.md).

mutmut reads one configuration per directory, but each module here must be checked against its
own fast unit tests only. So every module gets a work directory, ``build/mutate/<name>/``, holding
links to the packages and the tests and a generated ``pyproject.toml`` whose ``[tool.mutmut]``
mutates that one file (``only_mutate``) and selects that module's test files. mutmut keeps its
results there (``mutants/``), so a second run only redoes what changed: the mutants of changed
code, and the earlier survivors, which new tests may kill.

    python tools/mutate.py                 # every module, then the score table
    python tools/mutate.py g711 jitter     # some modules
    python tools/mutate.py --report        # the table from the stored results, nothing run
    python tools/mutate.py --survivors jitter   # the surviving mutants of a module, as diffs
    python tools/mutate.py dtmf_plugin --only '*x__advance__*'   # only the mutants matching a glob

Equivalent mutants (no behaviour can tell them from the original) are listed in
tools/mutate_equivalent.txt, one mutant name a line with the reason after a ``#``; they are
reported apart and left out of the score.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutate"
# The console script, not ``python -m mutmut``: the mutated code imports ``mutmut.__main__``, which
# under ``-m`` would be a second copy of the running module (and fail setting the start method).
MUTMUT = str(Path(sys.executable).parent / "mutmut")
PACKAGES = ("simplesip", "ivr", "ivr_plugins")
EQUIVALENT = ROOT / "tools" / "mutate_equivalent.txt"

# module name -> (file to mutate, its fast unit tests). Tests against real peers (SIPp, sockets)
# are deselected with -m "not peer".
MODULES: dict[str, tuple[str, list[str]]] = {
    "g711": ("simplesip/wire/g711.py", ["tests/test_g711.py"]),
    "dtmf_payloads": ("simplesip/wire/dtmf_payloads.py", ["tests/test_dtmf_rfc4733.py"]),
    "rfc4733": ("simplesip/core/dtmf.py", ["tests/test_dtmf_rfc4733.py"]),
    "auth": ("simplesip/core/auth.py", ["tests/test_auth.py"]),
    "auth_server": ("simplesip/core/auth_server.py", ["tests/test_auth.py"]),
    "transaction": ("simplesip/core/transaction.py", ["tests/test_transaction.py"]),
    "jitter": ("simplesip/core/jitter.py", ["tests/test_jitter.py"]),
    "rtpstats": ("simplesip/core/rtpstats.py", ["tests/test_jitter.py"]),
    "dtmf_plugin": ("ivr_plugins/dtmf.py", ["tests/test_plugin_dtmf.py", "tests/test_plugin_dtmf_modes.py"]),
    "vad": ("ivr_plugins/vad.py", ["tests/test_plugin_vad.py"]),
    "digits": ("ivr/flows/actions/digits.py", ["tests/test_flow_timers.py", "tests/test_flow_actions.py",
                                              "tests/test_flow_speech.py"]),
    "dialog": ("simplesip/core/dialog.py", ["tests/test_dialog.py"]),
    "rtp": ("simplesip/wire/rtp.py", ["tests/test_rtp.py"]),
    # The a=crypto (RFC 4568) parser's tests are in test_srtp.py; the RFC 4475 torture messages
    # against the parser are in test_rfc4475.py. Without them mutmut finds "no tests" for SdesKey
    # and CryptoAttribute and the published SIP vectors never run against a mutant.
    "sdp": ("simplesip/wire/sdp.py", ["tests/test_sdp.py", "tests/test_srtp.py"]),
    "headers": ("simplesip/wire/headers.py", ["tests/test_message.py", "tests/test_rfc4475.py"]),
    "uri": ("simplesip/wire/uri.py", ["tests/test_uri.py", "tests/test_rfc4475.py"]),
    "message": ("simplesip/wire/message.py", ["tests/test_message.py", "tests/test_rfc4475.py"]),
}

# Functions run only at import time, to build tables (G.711 code tables, the jitter buffer's
# quiet-code and attenuation tables). mutmut forks its workers from a process that has imported
# the code already, so a mutant there never runs and always "survives". Such survivors are
# checked again the slow way: the module's tests in a fresh interpreter with the mutant active.
IMPORT_TIME: dict[str, set[str]] = {
    "g711": {"_segment_of", "_build_ulaw_encoder", "_build_alaw_encoder", "_reindex_by_uint16",
             "_build_ulaw_decoder", "_build_alaw_decoder"},
    "jitter": {"_codes_where", "_attenuation_tables"},
}

# What mutmut's exit codes mean (mutmut.__main__.status_by_exit_code).
KILLED = {"killed", "timeout", "segfault"}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(name: str) -> Path:
    target, tests = MODULES[name]
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    for link in (*PACKAGES, "tests", "bench", "flows"):  # tests.helpers imports bench; some tests load flows/
        path = work / link
        if not path.is_symlink():
            path.symlink_to(ROOT / link)
    pytest_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    lines = ["[tool.mutmut]",
             f"source_paths = {_toml_list(list(PACKAGES))}",
             f"only_mutate = {_toml_list([target])}",
             f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not peer"]',
             "use_git_change_detection = false",
             'also_copy = ["bench", "flows"]',
             # Log calls are not behaviour: their text and arguments are not mutated.
             r"""do_not_mutate_patterns = ['^\s*(logger|log)\.(debug|info|warning|error|exception)\(']""",
             "", "[tool.pytest.ini_options]"]
    for key, value in pytest_config.items():
        if key == "addopts":
            continue
        lines.append(f"{key} = {json.dumps(value) if not isinstance(value, list) else _toml_list(value)}")
    text = "\n".join(lines) + "\n"
    config = work / "pyproject.toml"
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return work


def run(name: str, recheck_only: bool = False, only: list[str] | None = None) -> int:
    work = prepare(name)
    print(f"== {name}: {MODULES[name][0]} against {' '.join(MODULES[name][1])}", flush=True)
    # The Python reference is what is mutated: sessions must not take the compiled media path.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", SIMPLESIP_PURE_PYTHON="1")
    if only:  # some mutants only, named by globs: mutmut (re-)tests exactly those
        return subprocess.call([MUTMUT, "run", "--max-children", "2", *only], cwd=work, env=env)
    # mutmut keeps a verdict until the mutated function changes: a survivor of an earlier run
    # would stay "survived" after new tests were added. Those are run again by name (mutmut then
    # re-tests them whatever it has stored), after the run that tests what is new.
    stale = [key for key, status in statuses(name, merged=False).items() if status == "survived"]
    # max-children 2: the machine has two cores, shared.
    status = 0 if recheck_only else subprocess.call([MUTMUT, "run", "--max-children", "2"], cwd=work, env=env)
    if not recheck_only:
        stale = [key for key in stale if statuses(name, merged=False).get(key) == "survived"]
        if stale:
            print(f"   {len(stale)} survivors of an earlier run to re-test against the current tests", flush=True)
            status |= subprocess.call([MUTMUT, "run", "--max-children", "2", *stale], cwd=work, env=env)
    if name in IMPORT_TIME:
        recheck_import_time(name)
    return status


def _function_of(mutant: str) -> str:
    # simplesip.wire.g711.x__build_ulaw_encoder__mutmut_12 -> _build_ulaw_encoder
    return mutant.rpartition(".")[2].removeprefix("x_").rpartition("__mutmut_")[0]


def recheck_import_time(name: str) -> None:
    """Run the module's tests in a fresh interpreter for each import-time survivor."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    work = WORK / name
    results_path = work / "import_time.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    todo = [key for key, status in statuses(name, merged=False).items()
            if status == "survived" and _function_of(key) in IMPORT_TIME[name] and key not in results]
    print(f"   {len(todo)} import-time survivors to re-check in fresh interpreters", flush=True)

    def check(key: str) -> tuple[str, str]:
        env = dict(os.environ, MUTANT_UNDER_TEST=key, PYTHONDONTWRITEBYTECODE="1", SIMPLESIP_PURE_PYTHON="1")
        try:
            code = subprocess.call([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                    "-m", "not peer", *MODULES[name][1]], cwd=work / "mutants", env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        except subprocess.TimeoutExpired:  # the tests take seconds: a mutant that hangs them is caught
            return key, "timeout"
        return key, "survived" if code == 0 else "killed"

    with ThreadPoolExecutor(max_workers=2) as pool:  # the machine's two cores
        for future in as_completed([pool.submit(check, key) for key in todo]):
            key, status = future.result()
            results[key] = status
            results_path.write_text(json.dumps(results, indent=1, sort_keys=True))


# mutmut's exit codes (mutmut.stats.status_by_exit_code), read here without importing mutmut,
# whose import needs a configuration in the working directory.
STATUS_BY_EXIT_CODE = {None: "not checked", 0: "survived", 1: "killed", 3: "killed", 5: "no tests",
                       33: "no tests", 34: "skipped", 35: "suspicious", 36: "timeout", 37: "caught by type check",
                       24: "timeout", 152: "timeout", 255: "timeout", -24: "timeout", -11: "segfault",
                       -9: "segfault", 2: "interrupted"}


def statuses(name: str, merged: bool = True, only: list[str] | None = None) -> dict[str, str]:
    """mutant name -> status, from mutmut's stored results of module ``name`` (with ``merged``,
    import-time survivors carry the verdict of their re-check; with ``only``, the mutants
    matching one of those globs)."""
    meta = WORK / name / "mutants" / (MODULES[name][0] + ".meta")
    if not meta.exists():
        return {}
    data = json.loads(meta.read_text())
    found = {key: STATUS_BY_EXIT_CODE.get(code, "suspicious") for key, code in data["exit_code_by_key"].items()
             if not only or any(fnmatch.fnmatchcase(key, glob) for glob in only)}
    rechecked = WORK / name / "import_time.json"
    if merged and rechecked.exists():
        for key, status in json.loads(rechecked.read_text()).items():
            if found.get(key) == "survived":
                found[key] = status
    return found


def equivalent() -> dict[str, str]:
    result = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            name, _, reason = line.partition("#")
            if name.strip():
                result[name.strip()] = reason.strip()
    return result


def report(names: list[str], markdown: bool = False, only: list[str] | None = None) -> None:
    known_equivalent = equivalent()
    if markdown:
        print("| module | file | mutants | killed | equivalent | survived | other | score |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    else:
        print(f"{'module':<15} {'mutants':>7} {'killed':>7} {'equiv.':>6} {'survived':>8} {'other':>6} {'score':>7}")
    for name in names:
        found = statuses(name, only=only)
        if not found:
            print(f"| {name} | `{MODULES[name][0]}` | not run | | | | | |" if markdown else f"{name:<15} (not run)")
            continue
        equiv = [k for k in found if k in known_equivalent]
        # mutmut numbers a function's mutants in order: an edit of the code renumbers them, and an
        # entry of the equivalent list then names another mutant, which the tests may kill.
        stale = [k for k in equiv if found[k] in KILLED]
        if stale:
            print(f"warning: {name}: killed mutants listed as equivalent (renumbered by a code change?): "
                  f"{', '.join(stale)}", file=sys.stderr)
        killed = [k for k, s in found.items() if s in KILLED and k not in known_equivalent]
        survived = [k for k, s in found.items() if s == "survived" and k not in known_equivalent]
        other = len(found) - len(equiv) - len(killed) - len(survived)  # no tests, suspicious, ...
        counted = len(found) - len(equiv)
        score = 100.0 * len(killed) / counted if counted else 100.0
        if markdown:
            print(f"| {name} | `{MODULES[name][0]}` | {len(found)} | {len(killed)} | {len(equiv)} | "
                  f"{len(survived)} | {other} | {score:.1f} % |")
        else:
            print(f"{name:<15} {len(found):>7} {len(killed):>7} {len(equiv):>6} {len(survived):>8} {other:>6} {score:>6.1f}%")


def survivors(name: str, only: list[str] | None = None) -> None:
    known_equivalent = equivalent()
    work = WORK / name
    for key, status in statuses(name, only=only).items():
        if status in KILLED:
            continue
        tag = f"equivalent: {known_equivalent[key]}" if key in known_equivalent else status
        print(f"### {key} ({tag})", flush=True)
        subprocess.call([MUTMUT, "show", key], cwd=work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--report", action="store_true", help="print the score table only")
    parser.add_argument("--survivors", action="store_true", help="show the surviving mutants")
    parser.add_argument("--markdown", action="store_true", help="the table in Markdown (docs/testing.md)")
    parser.add_argument("--only", action="append", metavar="GLOB",
                        help="only the mutants whose name matches GLOB (repeatable), e.g. '*x__advance__*'")
    args = parser.parse_args()
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module(s): {', '.join(unknown)}")
    if args.survivors:
        for name in names:
            survivors(name, args.only)
        return 0
    failed = 0
    if not args.report:
        for name in names:
            failed |= run(name, only=args.only) != 0
    report(names, args.markdown, args.only)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
