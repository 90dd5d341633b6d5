"""The digit timer rules, each run through `simulate` on a virtual clock.

Prompts are tones of an exact length so the expected times are plain arithmetic.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from ivr.flows import run_simulation
from ivr.flows.session import TraceEntry


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def events(trace: list[TraceEntry], event: str) -> list[tuple[float, str, str]]:
    return [(e.time, e.node, e.detail) for e in trace if e.event == event]


COLLECT = """\
    start: ask
    defaults: {{timeout: 3s, inter_digit_timeout: 1s}}
    nodes:
      ask:
        collect:
          prompt: {{tone: "440", duration: 2s}}
          min_digits: {min_digits}
          max_digits: 6
        {extra}
        next: done
      done: {{hangup: }}
"""


def collect(tmp_path: Path, dtmf: str, *, min_digits: int = 1, extra: str = "") -> tuple:
    result = run_simulation(write(tmp_path, COLLECT.format(min_digits=min_digits, extra=extra)), dtmf=dtmf)
    outcome = [e.detail for e in result.trace if e.event == "outcome" and e.node == "ask"][0]
    return outcome, result


def test_first_digit_timer_starts_when_the_prompt_ends(tmp_path: Path) -> None:
    outcome, result = collect(tmp_path, "")
    assert outcome == "timeout"
    # prompt 2 s + first-digit timeout 3 s
    assert events(result.trace, "timer") == [(5.0, "ask", "first-digit timeout 3s")]


def test_a_barge_in_digit_starts_the_timers_before_the_prompt_ends(tmp_path: Path) -> None:
    outcome, result = collect(tmp_path, "+0.5s 4")
    assert events(result.trace, "barge-in") == [(0.5, "ask", "dtmf 4")]
    # inter-digit timer (1 s) from the barge-in, not first-digit (3 s) from the prompt's end
    assert events(result.trace, "timer") == [(1.5, "ask", "inter-digit timeout 1s")]
    assert outcome == "ok" and result.vars["digits"] == "4"


def test_inter_digit_timer_governs_once_a_digit_arrived(tmp_path: Path) -> None:
    outcome, result = collect(tmp_path, "@2.5 1 +0.9s 2 +0.9s 3")
    assert outcome == "ok" and result.vars["digits"] == "123"
    assert events(result.trace, "timer") == [(5.3, "ask", "inter-digit timeout 1s")]


def test_timeout_with_at_least_min_digits_is_ok_and_with_fewer_is_invalid(tmp_path: Path) -> None:
    outcome, result = collect(tmp_path, "@2.5 12", min_digits=2)
    assert (outcome, result.vars.get("digits")) == ("ok", "12")
    outcome, result = collect(tmp_path, "@2.5 1", min_digits=2)
    assert outcome == "invalid" and "digits" not in result.vars


def test_type_ahead_digits_are_kept_for_the_next_collect(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: intro
        nodes:
          intro: {play: {tone: "440", duration: 3s}, next: ask}
          ask:
            collect: {prompt: {say: "Enter the code"}, max_digits: 3}
            next: done
          done: {hangup: }
    """)
    result = run_simulation(path, dtmf="+1s 987")
    assert result.vars["digits"] == "987"
    assert events(result.trace, "type-ahead") == [(1.0, "ask", "987")]
    assert not any(e.event == "play" and e.node == "ask" for e in result.trace)  # prompt skipped


def test_flush_dtmf_discards_type_ahead(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: intro
        nodes:
          intro: {play: {tone: "440", duration: 3s}, next: ask}
          ask:
            collect: {prompt: {tone: "350", duration: 1s}, max_digits: 3, timeout: 2s}
            flush_dtmf: true
            next: done
          done: {hangup: }
    """)
    result = run_simulation(path, dtmf="+1s 987")
    assert events(result.trace, "flush") == [(1.0, "ask", "987")]
    assert [e.detail for e in result.trace if e.event == "outcome"][1] == "timeout"


def test_without_barge_in_the_prompt_plays_out_and_digits_wait(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: ask
        nodes:
          ask:
            collect: {prompt: {tone: "440", duration: 4s}, max_digits: 2}
            barge_in: none
            next: done
          done: {hangup: }
    """)
    result = run_simulation(path, dtmf="+1s 42")
    assert result.vars["digits"] == "42"
    assert not events(result.trace, "barge-in")
    outcome_time = [e.time for e in result.trace if e.event == "outcome"][0]
    assert outcome_time == 4.0  # the digits were used only once the prompt ended


def test_speech_barge_in_is_opt_in(tmp_path: Path) -> None:
    body = """\
        start: greet
        nodes:
          greet: {{play: {{tone: "440", duration: 5s}}, {barge_in}next: done}}
          done: {{hangup: }}
    """
    result = run_simulation(write(tmp_path, body.format(barge_in="")), speech="start@1.0,end@2.0")
    assert not events(result.trace, "barge-in")
    assert [e.time for e in result.trace if e.event == "outcome"] == [5.0]

    result = run_simulation(write(tmp_path, body.format(barge_in="barge_in: speech, ")), speech="start@1.0")
    assert events(result.trace, "barge-in") == [(1.0, "greet", "speech")]
    assert [e.detail for e in result.trace if e.event == "outcome"] == ["interrupted"]


def test_dtmf_barge_in_is_on_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: greet
        nodes:
          greet: {play: {tone: "440", duration: 5s}, next: done}
          done: {hangup: }
    """)
    result = run_simulation(path, dtmf="+2s 5")
    assert events(result.trace, "barge-in") == [(2.0, "greet", "dtmf 5")]


def test_documented_default_timeouts_are_5s_first_digit_and_3s_inter_digit(tmp_path: Path) -> None:
    body = """\
        start: ask
        nodes:
          ask:
            {action}: {{prompt: {{tone: "440", duration: 2s}}, {extra}}}
            next: done
          done: {{hangup: }}
    """
    result = run_simulation(write(tmp_path, body.format(action="collect", extra="max_digits: 4")))
    assert events(result.trace, "timer") == [(7.0, "ask", "first-digit timeout 5s")]
    result = run_simulation(write(tmp_path, body.format(action="collect", extra="max_digits: 4")),
                            dtmf="@2.5 1")
    assert events(result.trace, "timer") == [(5.5, "ask", "inter-digit timeout 3s")]
    result = run_simulation(write(tmp_path, body.format(action="menu", extra='options: {"1": done}, max_timeouts: 1')))
    assert events(result.trace, "timer") == [(7.0, "ask", "first-digit timeout 5s")]


def test_min_digits_0_makes_an_empty_entry_ok(tmp_path: Path) -> None:
    outcome, result = collect(tmp_path, "", min_digits=0)
    assert (outcome, result.vars.get("digits")) == ("ok", "")
    assert events(result.trace, "timer") == [(5.0, "ask", "first-digit timeout 3s")]
    outcome, result = collect(tmp_path, "@2.5 7", min_digits=0)
    assert (outcome, result.vars.get("digits")) == ("ok", "7")
    # With the default min_digits (1) the same silence is a timeout, not an empty success.
    outcome, result = collect(tmp_path, "")
    assert outcome == "timeout" and "digits" not in result.vars


MENU_LOOP = """\
    start: menu
    nodes:
      menu:
        menu:
          prompt: {tone: "440", duration: 2s}
          short_prompt: {tone: "350", duration: 1s}
          options: {"1": again, "9": done}
          max_invalid: 2
          timeout: 3s
          inter_digit_timeout: 1s
      again: {play: {tone: "480", duration: 0.5s}, next: menu}
      done: {hangup: }
"""


def test_menu_revisited_after_a_valid_choice_starts_afresh(tmp_path: Path) -> None:
    # Visit 1: a wrong key (count 1 of 2), then "1" after the short prompt. Visit 2 (back from
    # "again"): the full prompt again, and the wrong-entry count starts from zero, so one more
    # wrong key is not yet "exhausted".
    result = run_simulation(write(tmp_path, MENU_LOOP), dtmf="@2.5 5 @4.0 1 @7.0 5 @9.5 9")
    outcomes = [(e.time, e.node, e.detail) for e in result.trace if e.event == "outcome"]
    assert outcomes == [(4.0, "menu", "1"), (4.5, "again", "done"), (9.5, "menu", "9")]
    plays = [(e.time, e.detail) for e in result.trace if e.event == "play" and e.node == "menu"]
    assert plays == [(0.0, "tone 440 2s"), (2.5, "tone 350 1s"), (4.5, "tone 440 2s"), (7.0, "tone 350 1s")]
    assert [e.detail for e in result.trace if e.event == "invalid"] == ["'5' (1/2)", "'5' (1/2)"]


# -- the rest of the rules, each checked (issue 23) ---------------------------------------------


def run_probe(tmp_path: Path, params: str, dtmf: str):
    """A plugin action that reads one entry with ``read_entry`` (the helper behind menu and
    collect, public for plugin actions) and keeps what it returned."""
    from ivr.flows import collect_actions
    from ivr.flows.actions.digits import read_entry

    async def probe(session, params):
        entry = await read_entry(session, params.get("prompt"),
                                 is_complete=lambda digits: len(digits) >= params.get("max", 99),
                                 terminator=params.get("terminator"), first_timeout=2.0, inter_digit_timeout=1.0)
        session.vars["entry"] = (entry.digits, entry.ended_by, entry.speech)
        return "done"

    actions = collect_actions()
    actions.register("probe", probe, {"type": "object"}, outcomes=("done",))
    path = write(tmp_path, f"""\
        start: p
        nodes:
          p: {{probe: {{prompt: {{tone: "440", duration: 1s}}, {params}}}, next: bye}}
          bye: {{hangup: }}
    """)
    return run_simulation(path, dtmf=dtmf, actions=actions)


def test_read_entry_says_why_an_entry_ended(tmp_path: Path) -> None:
    assert run_probe(tmp_path, 'terminator: "#"', "@1.5 12#").vars["entry"] == ("12", "terminator", None)
    assert run_probe(tmp_path, "max: 3", "@1.5 123").vars["entry"] == ("123", "complete", None)
    assert run_probe(tmp_path, "max: 3", "@1.5 12").vars["entry"] == ("12", "timeout", None)
    assert run_probe(tmp_path, "max: 3", "").vars["entry"] == ("", "timeout", None)


def test_an_entry_stops_at_64_digits(tmp_path: Path) -> None:
    # a stuck key must not grow an entry without bound: 64 digits end it as complete
    result = run_probe(tmp_path, "max: 1000", "@1.5 " + "7" * 70)
    assert result.vars["entry"] == ("7" * 64, "complete", None)


def test_menu_gives_up_after_3_wrong_entries_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        start: menu
        nodes:
          menu:
            menu: {prompt: {tone: "440", duration: 1s}, options: {"1": done}, timeout: 1s}
            on: {exhausted: bye}
          done: {hangup: }
          bye: {hangup: }
    """)
    result = run_simulation(path, dtmf="@0.5 5 @2 6 @3 7 @4 8")
    assert [e.detail for e in result.trace if e.event == "invalid"] == ["'5' (1/3)", "'6' (2/3)", "'7' (3/3)"]
    assert [e.node for e in result.trace if e.event == "enter"] == ["menu", "bye"]
    # and the menu without a short_prompt replays its prompt
    assert [e.detail for e in result.trace if e.event == "play"] == ["tone 440 1s"] * 3


def test_menu_terminator_ends_an_entry_early(tmp_path: Path) -> None:
    body = """\
        start: menu
        nodes:
          menu:
            menu: {{prompt: {{tone: "440", duration: 1s}}, options: {{"1": one, "12": twelve}}, {extra}}}
          one: {{hangup: }}
          twelve: {{hangup: }}
    """
    # "1" could still become "12": without a terminator it waits for the inter-digit timer (3 s)
    result = run_simulation(write(tmp_path, body.format(extra="timeout: 2s")), dtmf="@1.5 1")
    assert [(e.time, e.detail) for e in result.trace if e.event == "outcome"][0] == (4.5, "1")
    result = run_simulation(write(tmp_path, body.format(extra='terminator: "#"')), dtmf="@1.5 1#")
    assert [(e.time, e.detail) for e in result.trace if e.event == "outcome"][0] == (1.5, "1")
    # the node's inter_digit_timeout (no flow default) governs the menu
    result = run_simulation(write(tmp_path, body.format(extra="inter_digit_timeout: 500ms")), dtmf="@1.5 1")
    assert [(e.time, e.detail) for e in result.trace if e.event == "outcome"][0] == (2.0, "1")


def test_collect_node_settings_without_flow_defaults(tmp_path: Path) -> None:
    body = """\
        start: ask
        nodes:
          ask:
            collect: {{prompt: {{tone: "440", duration: 1s}}, {extra}}}
            next: done
          done: {{hangup: }}
    """
    result = run_simulation(write(tmp_path, body.format(extra='terminator: "*"')), dtmf="@1.5 12*3")
    assert result.vars["digits"] == "12"
    assert [(e.time, e.detail) for e in result.trace if e.event == "outcome"][0] == (1.5, "ok")
    result = run_simulation(write(tmp_path, body.format(extra="timeout: 2s, inter_digit_timeout: 500ms")),
                            dtmf="@1.5 4")
    assert events(result.trace, "timer") == [(2.0, "ask", "inter-digit timeout 0.5s")]
    result = run_simulation(write(tmp_path, body.format(extra="timeout: 2s, inter_digit_timeout: 500ms")))
    assert events(result.trace, "timer") == [(3.0, "ask", "first-digit timeout 2s")]


def test_collect_traces_an_invalid_entry(tmp_path: Path) -> None:
    outcome, result = collect(tmp_path, "@2.5 1", min_digits=2)
    assert outcome == "invalid"
    assert events(result.trace, "invalid") == [(3.5, "ask", "'1'")]


def test_menu_patterns_are_routes_the_checker_follows(tmp_path: Path) -> None:
    from ivr.flows import check_file

    path = write(tmp_path, """\
        start: menu
        nodes:
          menu:
            menu: {prompt: {say: "Choose"}, options: {"1": done}, patterns: {"4[0-9]{2}": missing}}
          done: {hangup: }
    """)
    _, diagnostics = check_file(path)
    assert any("unknown node 'missing'" in str(d) for d in diagnostics)


def test_speech_a_keyed_entry_does_not_listen_to_does_not_hold_off_its_timers(tmp_path: Path) -> None:
    # A VAD reports the caller's (or the line's) speech on every call; a collect that takes keys
    # only must time out as configured all the same (it used to restart its timer at each speech
    # event: 13 s instead of 3 s here, and never on a line with steady background talk).
    talk = "start@2.5,end@4.5,start@6,end@7.5,start@9,end@10"
    result = run_simulation(write(tmp_path, COLLECT.format(min_digits=1, extra="")), speech=talk)
    assert events(result.trace, "timer") == [(5.0, "ask", "first-digit timeout 3s")]
    result = run_simulation(write(tmp_path, COLLECT.format(min_digits=1, extra="")), dtmf="@2.2 1", speech=talk)
    assert events(result.trace, "timer") == [(3.2, "ask", "inter-digit timeout 1s")]
    assert result.vars["digits"] == "1"
