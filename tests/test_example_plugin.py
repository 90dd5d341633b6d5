"""The example third-party plugin package (examples/ivr-example-plugin), as its author ships it:
pip-installed, found through the `ivr` entry points, its own tests on the shipped kit
(`ivr.testing`), shown by `ivr schema`, checked and simulated with its configuration, serving a
real call."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.net import free_port
from tests.helpers.robust_server import serving
from tests.helpers.waiting import wait_for_sync

PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "ivr-example-plugin"
IVR = [sys.executable, "-m", "ivr"]


@pytest.fixture(scope="module")
def installed():
    """pip install -e the example into this venv for the test, and take it out again after, so
    other test sessions sharing the venv do not load it."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # --no-build-isolation: build with the venv's setuptools (and wheel) instead of fetching them
    subprocess.run([*pip, "install", "--no-build-isolation", "--no-deps", "-e", str(PACKAGE)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "ivr-example-plugin"], capture_output=True, timeout=60)
        shutil.rmtree(PACKAGE / "ivr_example_plugin.egg-info", ignore_errors=True)


def ivr(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*IVR, *args], cwd=PACKAGE, capture_output=True, text=True, timeout=timeout)


def test_the_packages_own_tests_pass_on_the_shipped_kit(installed) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=PACKAGE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout.splitlines()[-1]
    source = (PACKAGE / "tests" / "test_example.py").read_text()
    assert "from tests" not in source and "ivr.testing" in source  # nothing from our own tests/


def test_schema_shows_the_plugin_action_with_its_outcomes(installed) -> None:
    result = ivr("schema")
    assert result.returncode == 0, result.stderr
    node = json.loads(result.stdout)["$defs"]["node"]["properties"]
    assert node["lookup_account"]["required"] == ["number"]


def test_check_and_simulate_run_with_the_plugins_configuration(installed) -> None:
    checked = ivr("check", "--config", "example.yaml", "flows/account.yaml")
    assert checked.returncode == 0 and checked.stdout.strip() == "flows/account.yaml: ok (6 nodes)", checked
    run = ivr("simulate", "--config", "example.yaml", "flows/account.yaml", "--dtmf", "+1s 1001#", "--from",
              "sip:alice@example.com")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "say 'Welcome, alice. Please type your account number" in run.stdout
    assert "say 'Alice, your balance is 12.50 dollars.'" in run.stdout
    # --set reaches the plugin's section as the file does
    other = ivr("simulate", "--config", "example.yaml", "--set", "plugins.example.greeting=Howdy",
                "flows/account.yaml", "--dtmf", "+1s 2002#")
    assert "say 'Howdy, 1001." in other.stdout and "Bob, your balance is 0.00 dollars." in other.stdout
    refused = ivr("check", "--config", "example.yaml", "--set", "plugins.example.accounts=missing.csv",
                  "flows/account.yaml")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "ivr check: plugin example: refuses its configuration: accounts: missing.csv is not a file"]


def test_serve_takes_a_real_call_through_the_plugin(installed, tmp_path: Path) -> None:
    port = free_port()
    cdr = tmp_path / "cdr.jsonl"
    args = ("--config", "example.yaml", "--listen", f"127.0.0.1:{port}", "--set", f"cdr={cdr}",
            "--set", "logging.level=info")
    with serving(*args, cwd=PACKAGE, log_path=tmp_path / "serve.log") as server_log:
        speech = PACKAGE.parents[1] / "flows" / "prompts" / "main_menu.wav"  # the caller talks, then types
        call = subprocess.run([*IVR, "call", f"sip:account@127.0.0.1:{port}", "--dtmf", "+1s 1001#",
                               "--play", str(speech), "--duration", "20"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert call.returncode == 0, call.stderr
        wait_for_sync(lambda: cdr.exists() and cdr.read_text().strip(), timeout=30, message=server_log)
        text = server_log()
    record = json.loads(cdr.read_text().splitlines()[0])
    assert record["flow"] == "account" and record["digits"] == "1001#" and record["error"] is None
    assert record["flow_outcome"] == "hangup"
    level = float(text.split("caller level ")[1].split()[0])  # the plugin's audio hook heard the caller
    assert -60 < level < -3, text
