"""Every built-in action and its outcomes, run through `simulate` (the real executor)."""

from __future__ import annotations

import textwrap
import wave
from pathlib import Path

import pytest

from ivr.flows import collect_actions, run_simulation


def write(tmp_path: Path, body: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def outcomes(result) -> list[tuple[str, str]]:
    return [(e.node, e.detail) for e in result.trace if e.event == "outcome"]


def visited(result) -> list[str]:
    return [e.node for e in result.trace if e.event == "enter"]


MENU = """\
    start: menu
    defaults: {timeout: 2s, inter_digit_timeout: 1s}
    nodes:
      menu:
        menu:
          prompt: {tone: "440", duration: 1s}
          short_prompt: {tone: "350", duration: 0.5s}
          invalid_prompt: {say: "Invalid."}
          timeout_prompt: {say: "No input."}
          options: {"1": one, "12": twelve, "0": zero}
          patterns: {"4[0-9]{2}": extension}
          max_invalid: 2
          max_timeouts: 3
          save_as: choice
          on: {exhausted: bye}
      one: {hangup: }
      twelve: {hangup: }
      zero: {hangup: }
      extension: {hangup: }
      bye: {hangup: }
"""


@pytest.mark.parametrize(
    ("dtmf", "outcome", "choice"),
    [
        ("+1s 0", "0", "0"),  # a key no longer option extends: chosen at once
        ("+1s 12", "12", "12"),
        ("+1s 1", "1", "1"),  # "1" could become "12": chosen when the inter-digit timer ends
        ("+1s 412", "4[0-9]{2}", "412"),  # a pattern option
    ],
)
def test_menu_options(tmp_path: Path, dtmf: str, outcome: str, choice: str) -> None:
    result = run_simulation(write(tmp_path, MENU), dtmf=dtmf)
    assert outcomes(result)[0] == ("menu", outcome)
    assert result.vars["choice"] == choice


def test_menu_chooses_the_ambiguous_prefix_after_the_inter_digit_timeout(tmp_path: Path) -> None:
    result = run_simulation(write(tmp_path, MENU), dtmf="+1s 1")
    chosen_at = [e.time for e in result.trace if e.event == "outcome"][0]
    assert chosen_at == 2.0  # digit at 1 s + inter-digit 1 s


def test_menu_counts_invalid_and_timeouts_separately(tmp_path: Path) -> None:
    # timeout, invalid, timeout, then invalid: the 2nd invalid exhausts (max_invalid 2), not the
    # 4th failure overall and not the timeouts (max_timeouts 3).
    result = run_simulation(write(tmp_path, MENU), dtmf="@3.1 7 @10 8")
    failures = [(e.event, e.detail) for e in result.trace if e.event in ("invalid", "timeout")]
    assert failures == [("timeout", "'' (1/3)"), ("invalid", "'7' (1/2)"),
                        ("timeout", "'' (2/3)"), ("invalid", "'8' (2/2)")]
    assert outcomes(result)[0] == ("menu", "exhausted")
    assert visited(result) == ["menu", "bye"]


def test_menu_plays_long_prompt_first_then_short(tmp_path: Path) -> None:
    result = run_simulation(write(tmp_path, MENU), dtmf="")
    plays = [e.detail for e in result.trace if e.event == "play"]
    assert plays == ["tone 440 1s", "say 'No input.'", "tone 350 0.5s", "say 'No input.'",
                     "tone 350 0.5s", "say 'No input.'"]
    assert outcomes(result)[0] == ("menu", "exhausted")


def test_menu_routes_invalid_and_timeout_when_the_node_asks(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: menu
        nodes:
          menu:
            menu:
              prompt: {say: "Menu"}
              short_prompt: {say: "Short"}
              options: {"1": done}
              max_invalid: 2
              timeout: 5s
            on: {invalid: sorry, timeout: menu, exhausted: done}
          sorry: {play: {say: "Sorry"}, next: menu}
          done: {hangup: }
    """)
    result = run_simulation(path, dtmf="+1s 5 +3s 6")
    assert outcomes(result) == [("menu", "invalid"), ("sorry", "done"), ("menu", "exhausted")]
    # the count survived the detour, and the second visit played the short prompt
    assert [e.detail for e in result.trace if e.event == "play"][:3] == ["say 'Menu'", "say 'Sorry'", "say 'Short'"]


COLLECT = """\
    start: ask
    nodes:
      ask:
        collect: {{prompt: {{say: "PIN"}}, {params}, invalid_prompt: {{say: "Wrong"}},
                   timeout_prompt: {{say: "Again"}}, save_as: pin}}
        on: {{ok: good, invalid: bad, timeout: silent}}
      good: {{hangup: }}
      bad: {{hangup: }}
      silent: {{hangup: }}
"""


@pytest.mark.parametrize(
    ("params", "dtmf", "outcome", "pin"),
    [
        ("min_digits: 4", "+1s 1234#", "ok", "1234"),  # terminator ends the entry
        ("max_digits: 3", "+1s 98765", "ok", "987"),  # max_digits ends it
        ("pattern: '[0-9]{4}'", "+1s 12#", "invalid", None),  # validation pattern
        ("min_digits: 4", "+1s 12#", "invalid", None),  # too short
        ("min_digits: 4", "", "timeout", None),
        ("attempts: 2, min_digits: 2", "+1s 1# +3s 42#", "ok", "42"),  # second attempt succeeds
    ],
)
def test_collect(tmp_path: Path, params: str, dtmf: str, outcome: str, pin: str | None) -> None:
    result = run_simulation(write(tmp_path, COLLECT.format(params=params)), dtmf=dtmf)
    assert outcomes(result)[0] == ("ask", outcome)
    assert result.vars.get("pin") == pin


def test_collect_attempts_replay_with_the_failure_prompt(tmp_path: Path) -> None:
    path = write(tmp_path, COLLECT.format(params="attempts: 2, timeout: 1s"))
    result = run_simulation(path)
    assert [e.detail for e in result.trace if e.event == "play"] == ["say 'PIN'", "say 'Again'", "say 'PIN'"]
    assert outcomes(result)[0] == ("ask", "timeout")


RECORD = """\
    start: rec
    nodes:
      rec:
        record:
          to: "msgs/{{{{ call.from }}}}.wav"
          max_length: 30s
          silence_timeout: 3s
          min_length: 1s
          finish_on_key: "#"
          save_as: msg
        on: {{complete: ok, no_audio: empty, hangup: gone}}
      ok: {{hangup: }}
      empty: {{hangup: }}
      gone: {{set: {{saved: "{{{{ vars.msg }}}}"}}}}
"""


@pytest.mark.parametrize(
    ("dtmf", "speech", "outcome", "reason"),
    [
        ("", "start@1,end@6", "complete", "silence"),  # stopped by 3 s of silence, trimmed
        ("@4 #", "start@1", "complete", "key"),
        ("", "", "no_audio", "silence"),  # nothing said: silence only, trimmed to nothing
        ("", "start@0.5", "complete", "max_length"),
    ],
)
def test_record(tmp_path: Path, dtmf: str, speech: str, outcome: str, reason: str) -> None:
    result = run_simulation(write(tmp_path, RECORD.format()), dtmf=dtmf, speech=speech,
                            caller="sip:../../alice@127.0.0.1", config={"recordings_dir": str(tmp_path / "rec")})
    assert outcomes(result)[0] == ("rec", outcome)
    assert result.recordings[0].reason == reason
    # call data in a file name is sanitised: no way out of the recordings folder
    assert result.vars["msg"] == str(tmp_path / "rec" / "msgs" / "____alice.wav")


def test_record_keeps_the_message_when_the_caller_hangs_up(tmp_path: Path) -> None:
    result = run_simulation(write(tmp_path, RECORD.format()), dtmf="@5 hangup", speech="start@1",
                            config={"recordings_dir": str(tmp_path)})
    assert outcomes(result)[0] == ("rec", "hangup")
    assert result.vars["saved"].endswith(".wav")  # the on-hangup node ran without media
    assert result.outcome == "caller_hangup"
    assert result.recordings[0].reason == "hangup"


@pytest.mark.parametrize("answer", ["failed", "busy", "no_answer"])
def test_transfer_failures_are_outcomes(tmp_path: Path, answer: str) -> None:
    path = write(tmp_path, """\
        start: xfer
        nodes:
          xfer: {transfer: "sip:{{ config.desk }}@127.0.0.1", next: sorry}
          sorry: {hangup: }
    """)
    result = run_simulation(path, transfer_result=answer, config={"desk": "200"})
    assert outcomes(result)[0] == ("xfer", answer)
    assert ("transfer", "sip:200@127.0.0.1") in result.controller_actions
    assert result.outcome == "hangup"


def test_transfer_success_ends_the_flow_after_answering(tmp_path: Path) -> None:
    path = write(tmp_path, "start: x\nnodes:\n  x: {transfer: {to: 'sip:a@127.0.0.1'}, next: y}\n  y: {hangup: }\n")
    result = run_simulation(path)
    assert result.outcome == "transferred"
    assert [a for a, _ in result.controller_actions] == ["answer", "transfer"]


def test_set_switch_goto(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: init
        vars: {tier: silver}
        nodes:
          init: {set: {tier: "gold", greeting: "Hello {{ call.from }} ({{ vars.tier }})"}, next: route}
          route:
            switch: {value: "{{ vars.tier }}", cases: {gold: vip, silver: normal}}
          vip: {goto: done}
          normal: {goto: done}
          done: {hangup: }
    """)
    result = run_simulation(path, caller="sip:alice@127.0.0.1")
    assert result.vars["greeting"] == "Hello alice (silver)"  # set renders with the old values
    assert visited(result) == ["init", "route", "vip", "done"]


def test_switch_default_outcome(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: route
        nodes:
          route: {switch: {value: "{{ call.to }}", cases: {sales: a}}, on: {default: b}}
          a: {hangup: }
          b: {hangup: }
    """)
    assert visited(run_simulation(path, callee="sip:other@127.0.0.1")) == ["route", "b"]


HOURS = """\
    start: when
    schedules:
      office:
        timezone: America/New_York
        weekly: {mon-fri: "09:00-17:00", sat: "22:00-02:00"}
        holidays: ["2026-11-26"]
    nodes:
      when: {hours: office, on: {open: o, closed: c, holiday: h}}
      o: {hangup: }
      c: {hangup: }
      h: {hangup: }
"""


@pytest.mark.parametrize(
    ("at", "tz", "state"),
    [
        ("2026-11-25T10:00", "America/New_York", "open"),
        ("2026-11-25T16:30", "Europe/Paris", "open"),  # 10:30 in New York
        ("2026-11-25T23:30", "Europe/Paris", "closed"),  # 17:30 in New York
        ("2026-11-26T10:00", "America/New_York", "holiday"),  # Thanksgiving
        ("2026-11-29T01:30", "America/New_York", "open"),  # Sunday morning, Saturday's night range
        ("2026-11-29T03:00", "America/New_York", "closed"),
    ],
)
def test_hours_with_time_zone_and_holidays(tmp_path: Path, at: str, tz: str, state: str) -> None:
    result = run_simulation(write(tmp_path, HOURS), at=at, tz=tz)
    assert outcomes(result)[0] == ("when", state)
    assert not result.controller_actions[:-1]  # never answered: hours needs no media


def test_sub_and_return_within_a_flow_and_into_another_file(tmp_path: Path) -> None:
    write(tmp_path, """\
        start: ask
        nodes:
          ask: {collect: {prompt: {say: "Code"}, max_digits: 1}, on: {ok: back}, next: fail}
          back: {return: "got {{ vars.digits }}"}
          fail: {return: nothing}
    """, name="child.yaml")
    path = write(tmp_path, """\
        start: first
        nodes:
          first: {sub: helper, on: {helped: second}}
          helper: {pause: 1s, next: helper_return}
          helper_return: {return: helped}
          second: {sub: {flow: child.yaml}, on: {got 7: done}}
          done: {hangup: }
    """)
    result = run_simulation(path, dtmf="+2s 7")
    assert outcomes(result) == [("helper", "done"), ("first", "helped"), ("ask", "ok"), ("second", "got 7")]
    assert visited(result)[-1] == "done"


def test_pause_before_answer_keeps_the_call_ringing(tmp_path: Path) -> None:
    path = write(tmp_path, "start: wait\nnodes:\n  wait: {pause: 2.5s, next: hi}\n  hi: {play: {say: Hi}, next: bye}\n"
                           "  bye: {hangup: }\n")
    result = run_simulation(path)
    assert [(e.time, e.event) for e in result.trace if e.event == "answer"] == [(2.5, "answer")]


def test_reject_before_answer(tmp_path: Path) -> None:
    path = write(tmp_path, "start: no\nnodes:\n  no: {reject: 603}\n")
    result = run_simulation(path)
    assert result.outcome == "rejected"
    assert result.controller_actions == [("reject", 603)]


def test_reject_after_answer_is_an_error_routed_to_on_error(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: hi
        on_error: oops
        nodes:
          hi: {play: {say: Hi}, next: no}
          no: {reject: {status: 486}}
          oops: {play: {say: "{{ vars.error }}"}, next: bye}
          bye: {hangup: }
    """)
    result = run_simulation(path)
    assert "reject after the call was answered" in result.vars["error"]
    assert visited(result) == ["hi", "no", "oops", "bye"]
    assert result.outcome == "hangup"


def test_unrouted_outcome_goes_to_the_flow_default(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: ask
        default: fallback
        nodes:
          ask: {collect: {prompt: {say: x}, timeout: 1s}, on: {ok: good}}
          good: {hangup: }
          fallback: {hangup: }
    """)
    assert visited(run_simulation(path)) == ["ask", "fallback"]


def test_caller_hangup_goes_to_on_hangup_where_media_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: menu
        on_hangup: log
        nodes:
          menu: {menu: {prompt: {say: "Choose"}, options: {"1": menu}}}
          log: {set: {note: "left during {{ vars.step | default('menu') }}"}, next: bye_prompt}
          bye_prompt: {play: {say: "Goodbye"}}
    """)
    result = run_simulation(path, dtmf="+1s hangup")
    assert outcomes(result) == [("menu", "hangup"), ("log", "ok"), ("bye_prompt", "hangup")]
    assert result.vars["note"] == "left during menu"
    assert result.outcome == "caller_hangup"
    assert ("hangup", None) not in result.controller_actions


def test_running_out_of_nodes_hangs_up(tmp_path: Path) -> None:
    result = run_simulation(write(tmp_path, "start: a\nnodes:\n  a: {play: {say: Hi}}\n"))
    assert result.outcome == "hangup"
    assert result.controller_actions == [("answer", None), ("hangup", None)]


def test_a_loop_that_never_waits_is_stopped(tmp_path: Path) -> None:
    path = write(tmp_path, "start: a\nnodes:\n  a: {goto: b}\n  b: {set: {x: 1}, next: a}\n")
    result = run_simulation(path)
    assert result.outcome == "error"
    assert any("loops without ever waiting" in e.detail for e in result.trace)


def test_play_files_and_tones_last_their_real_length(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    with wave.open(str(tmp_path / "prompts" / "half.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 4000)
    path = write(tmp_path, """\
        start: a
        nodes:
          a: {play: [prompts/half.wav, {tone: "350+440", duration: 1s}, {silence: 250ms}], next: b}
          b: {hangup: }
    """)
    result = run_simulation(path)
    assert [(e.time, e.detail) for e in result.trace if e.event == "outcome"] == [(1.75, "done")]


def test_plugin_action_runs_with_rendered_params(tmp_path: Path) -> None:
    seen = {}

    async def lookup(session, params):
        seen.update(params)
        session.vars["vip"] = params["number"] == "1001"
        return "found"

    actions = collect_actions()
    actions.register("crm_lookup", lookup, {"type": "object"}, outcomes=("found", "missing"))
    path = write(tmp_path, """\
        start: look
        nodes:
          look: {crm_lookup: {number: "{{ call.from }}"}, on: {found: yes, missing: no}}
          yes: {hangup: }
          no: {hangup: }
    """)
    result = run_simulation(path, actions=actions)
    assert seen == {"number": "1001"}
    assert visited(result) == ["look", "yes"]
    assert [a for a, _ in result.controller_actions][0] == "answer"  # plugin actions get media


def test_record_beeps_before_recording_and_skips_the_beep_when_asked(tmp_path: Path) -> None:
    result = run_simulation(write(tmp_path, RECORD.format()), speech="start@1,end@2",
                            config={"recordings_dir": str(tmp_path)})
    steps = [(e.time, e.event, e.detail.split(" ")[0]) for e in result.trace if e.event in ("play", "record")]
    assert steps == [(0.0, "play", "tone"), (0.3, "record", "msgs/1001.wav")]
    quiet = RECORD.format().replace("save_as: msg", "save_as: msg\n          beep: false")
    result = run_simulation(write(tmp_path, quiet), speech="start@1,end@2", config={"recordings_dir": str(tmp_path)})
    assert [e.event for e in result.trace if e.event in ("play", "record")] == ["record"]


def test_menu_routed_timeout_comes_back_with_the_short_prompt(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: menu
        nodes:
          menu:
            menu: {prompt: {say: "Long"}, short_prompt: {say: "Short"}, options: {"1": done}, timeout: 1s,
                   max_timeouts: 2}
            on: {timeout: nudge, exhausted: done}
          nudge: {play: {say: "Still there?"}, next: menu}
          done: {hangup: }
    """)
    result = run_simulation(path)
    assert outcomes(result) == [("menu", "timeout"), ("nudge", "done"), ("menu", "exhausted")]
    assert [e.detail for e in result.trace if e.event == "play"] == ["say 'Long'", "say 'Still there?'",
                                                                     "say 'Short'"]


def test_collect_hangup(tmp_path: Path) -> None:
    result = run_simulation(write(tmp_path, COLLECT.format(params="min_digits: 4")), dtmf="+1s 12 +1s hangup")
    assert outcomes(result) == [("ask", "hangup")]
    assert result.outcome == "caller_hangup"
