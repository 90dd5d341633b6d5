"""The example third-party plugin package: pip-installed, found through the `ivr` entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "ivr-example-plugin"


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


CHECK = textwrap.dedent(
    """
    import asyncio, pluggy
    import ivr.hookspecs
    from ivr.call import CallContext
    pm = pluggy.PluginManager("ivr")
    pm.add_hookspecs(ivr.hookspecs)
    pm.load_setuptools_entrypoints("ivr")
    plugin = pm.get_plugin("example")
    assert plugin is not None, pm.list_name_plugin()
    pm.hook.ivr_configure.call_historic(kwargs={"config": {"plugins": {"example": {"greeting": "Hi"}}}})
    call = CallContext("c1", pm.hook, from_user="alice")
    pm.hook.ivr_call_started(call=call)
    for digit in "123":
        call.report_dtmf(digit, "rfc4733")
    actions = {}
    pm.hook.ivr_register_actions(register=lambda name, handler, schema=None, outcomes=(): actions.update({name: (handler, outcomes)}))
    handler, outcomes = actions["example_key_count"]
    class Session: pass
    session = Session(); session.call = call
    outcome = asyncio.run(handler(session, {"at_least": 3}))
    print(call.vars["greeting"], call.data["example"]["keys"], outcome, *sorted(outcomes))
    pm.hook.ivr_call_ended(call=call, reason="remote_hangup")
    assert "example" not in call.data
    """
)


def test_entry_point_plugin_is_discovered_and_its_hooks_run(installed) -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Hi,", "alice", "3", "many", "few", "many"]
