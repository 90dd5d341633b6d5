"""Speech in flows: menus and collects that listen, ``listen``, no_match / no_input, a key
cancelling speech, barge-in with a minimum speech length, ``ivr simulate --say`` and
``--speech-wav``, the checker's speech rules, and the vad plugin's utterance buffer."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ivr_plugins.vad as vad_plugin
from ivr import hookimpl
from ivr.call import SpeechEvent
from ivr.cli import build_parser
from ivr.flows import check_file, run_simulation
from ivr.flows.cli import cmd_simulate
from ivr.flows.session import TraceEntry
from ivr.flows.speech import match_text, option_phrases, spoken_digits
from ivr.testing import AudioRig, events, frames, make_setup
from tests.helpers.audio import silence, speech
from tests.helpers.peers import write_wav
from tests.helpers.speech_corpus import synthesise

MENU = """\
    start: menu
    defaults: {{barge_in: [dtmf, speech]}}
    nodes:
      menu:
        menu:
          prompt: {{tone: "440", duration: 2s}}
          input: [dtmf, speech]
          options:
            "1": {{goto: sales, say: [sales, buy something]}}
            "2": {{goto: support, say: support}}
            "3": billing
          timeout: 3s
          {extra}
      sales: {{play: {{tone: "500", duration: 1s}}, next: bye}}
      support: {{play: {{tone: "600", duration: 1s}}, next: bye}}
      billing: {{play: {{tone: "700", duration: 1s}}, next: bye}}
      sorry: {{play: {{tone: "300", duration: 1s}}, next: bye}}
      bye: {{hangup: }}
"""


def write(tmp_path: Path, body: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def menu(tmp_path: Path, extra: str = "", **script: str):
    return run_simulation(write(tmp_path, MENU.format(extra=extra)), **script)


def trace_events(trace: list[TraceEntry], event: str) -> list[tuple[float, str, str]]:
    return [(e.time, e.node, e.detail) for e in trace if e.event == event]


def visited(trace: list[TraceEntry]) -> list[str]:
    return [e.node for e in trace if e.event == "enter"]


# -- menus ------------------------------------------------------------------------------------


def test_a_said_phrase_chooses_its_option(tmp_path: Path) -> None:
    result = menu(tmp_path, say="buy something@2.5")
    assert visited(result.trace) == ["menu", "sales", "bye"]
    assert result.vars["speech"] == "buy something" and result.vars["speech_confidence"] == 1.0
    # recognised when the utterance ended: 2.5 s + 2 words x 0.45 s
    assert trace_events(result.trace, "outcome")[0] == (3.4, "menu", "1")


def test_a_digit_key_can_be_said_and_keys_still_work(tmp_path: Path) -> None:
    assert visited(menu(tmp_path, say="three@2.5").trace)[1] == "billing"
    assert visited(menu(tmp_path, dtmf="@2.5 2").trace)[1] == "support"


def test_unrecognised_speech_is_no_match_and_silence_no_input(tmp_path: Path) -> None:
    routed = "on: {no_match: sorry, no_input: sorry}"
    result = menu(tmp_path, routed, say="pizza@2.5")
    assert trace_events(result.trace, "outcome")[0][2] == "no_match"
    assert visited(result.trace)[1] == "sorry"
    result = menu(tmp_path, routed)
    assert trace_events(result.trace, "outcome")[0] == (5.0, "menu", "no_input")  # prompt 2 s + timeout 3 s


def test_flows_routing_only_the_digit_outcomes_still_get_them(tmp_path: Path) -> None:
    result = menu(tmp_path, "on: {invalid: sorry, timeout: sorry}", say="pizza@2.5")
    assert trace_events(result.trace, "outcome")[0][2] == "invalid"


def test_unrouted_no_match_replays_and_counts_toward_exhausted(tmp_path: Path) -> None:
    result = menu(tmp_path, "max_invalid: 2\n          on: {exhausted: sorry}", say="pizza@2.5, pasta@6")
    assert [d for _, _, d in trace_events(result.trace, "no_match")] == ["'' (1/2)", "'' (2/2)"]
    assert trace_events(result.trace, "outcome")[0][2] == "exhausted"


def test_a_key_press_cancels_speech_in_progress(tmp_path: Path) -> None:
    result = menu(tmp_path, say="support@2.5", dtmf="@2.7 1")
    assert trace_events(result.trace, "speech")[1] == (2.7, "menu", "cancelled by dtmf")
    assert visited(result.trace)[1] == "sales"  # the key, not the (later) speech
    assert "speech" not in result.vars


def test_speech_only_menu_ignores_keys(tmp_path: Path) -> None:
    result = menu(tmp_path.joinpath(), "", dtmf="@2.2 1", say="support@2.5")
    assert visited(result.trace)[1] == "sales"  # input [dtmf, speech]: the key wins
    body = MENU.replace("input: [dtmf, speech]", "input: speech")
    result = run_simulation(write(tmp_path, body.format(extra="")), dtmf="@2.2 1", say="support@2.5")
    assert trace_events(result.trace, "ignored") == [(2.2, "menu", "dtmf 1")]
    assert visited(result.trace)[1] == "support"


# -- barge-in -----------------------------------------------------------------------------


def test_speech_barges_in_after_min_speech_of_voice(tmp_path: Path) -> None:
    result = menu(tmp_path, say="support@0.5")
    # start at 0.5 s; min_speech (120 ms) of voice, i.e. 6 frames of 20 ms, stops the prompt
    (barge_in,) = trace_events(result.trace, "barge-in")
    assert barge_in[2] == "speech" and 0.62 <= barge_in[0] <= 0.64
    assert visited(result.trace)[1] == "support"


def test_a_short_sound_does_not_barge_in(tmp_path: Path) -> None:
    result = menu(tmp_path, "min_speech: 500ms", say="mm@0.5")  # one word: 0.45 s of voice
    assert not trace_events(result.trace, "barge-in")
    # the simulated utterance lasts whole 20 ms frames: 0.46 s
    assert (0.96, "menu", "too short to barge in") in trace_events(result.trace, "speech")
    # nothing was said after the prompt: no_input once its timeout ran out (2 s + 3 s)
    assert trace_events(result.trace, "no_input")[0] == (5.0, "menu", "'' (1/3)")


# -- collect and listen -------------------------------------------------------------------


def test_collect_takes_spoken_digits(tmp_path: Path) -> None:
    body = """\
        start: ask
        nodes:
          ask:
            collect: {prompt: {tone: "440", duration: 1s}, input: [dtmf, speech], min_digits: 4, max_digits: 4}
            on: {ok: bye, invalid: bye, no_match: bye}
          bye: {hangup: }
    """
    result = run_simulation(write(tmp_path, body), say="four two oh nine@1.5")
    assert result.vars["digits"] == "4209"
    result = run_simulation(write(tmp_path, body), say="forty two@1.5")
    assert trace_events(result.trace, "outcome")[0][2] == "no_match"
    result = run_simulation(write(tmp_path, body), say="four two@1.5")
    assert trace_events(result.trace, "outcome")[0][2] == "invalid"  # two digits, four needed


LISTEN = """\
    start: ask
    nodes:
      ask:
        listen: {{prompt: {{tone: "440", duration: 1s}}, save_as: answer, timeout: 2s {grammar}}}
        on: {{ok: bye, no_match: bye, no_input: bye, dtmf: bye}}
      bye: {{hangup: }}
"""


def test_listen_dictation_stores_what_was_said(tmp_path: Path) -> None:
    result = run_simulation(write(tmp_path, LISTEN.format(grammar="")), say="John Smith@1.5")
    assert result.vars["answer"] == "John Smith" and result.vars["speech"] == "John Smith"
    assert trace_events(result.trace, "outcome")[0][2] == "ok"


def test_listen_with_grammar_no_match_no_input_and_dtmf(tmp_path: Path) -> None:
    path = write(tmp_path, LISTEN.format(grammar=", grammar: [yes, no]"))
    assert run_simulation(path, say="Yes!@1.5").vars["answer"] == "yes"
    assert trace_events(run_simulation(path, say="maybe@1.5").trace, "outcome")[0][2] == "no_match"
    assert trace_events(run_simulation(path).trace, "outcome")[0] == (3.0, "ask", "no_input")
    assert trace_events(run_simulation(path, dtmf="@1.5 5").trace, "outcome")[0][2] == "dtmf"


# -- simulate, checker, helpers ---------------------------------------------------------------


def test_simulate_runs_a_wav_through_the_real_recogniser(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "support.wav", synthesise("support", "en-us", 150))
    path = write(tmp_path, MENU.format(extra=""))
    out = io.StringIO()
    args = build_parser().parse_args(["simulate", str(path), "--speech-wav", f"{wav}@2.5"])
    assert cmd_simulate(args, make_setup(builtins=True), out) == 0  # the stt plugin recognises
    assert "recognised 'support'" in out.getvalue()
    assert "support          enter     play" in out.getvalue()


def test_checker_speech_rules(tmp_path: Path) -> None:
    path = write(tmp_path, MENU.format(extra="").replace('"3": billing', '"3": {goto: billing, say: support}'))
    flow, diagnostics = check_file(path)
    assert flow is None
    assert any("phrase 'support' is said for options '2' and '3'" in d.message for d in diagnostics)
    path = write(tmp_path, """\
        start: m
        nodes:
          m: {menu: {prompt: {tone: "1"}, input: speech, options: {"#": bye}}}
          bye: {hangup: }
    """)
    flow, diagnostics = check_file(path)
    assert flow is None and "needs options with say: phrases" in diagnostics[0].message
    path = write(tmp_path, MENU.format(extra="").replace('"3": billing', '"3": {say: [billing, seven], goto: billing}'))
    assert check_file(path)[0] is not None  # goto and say in any order
    path = write(tmp_path, MENU.format(extra="").replace("goto: sales,", ""))
    assert check_file(path)[0] is None  # an option without goto


def test_phrase_helpers() -> None:
    assert option_phrases({"1": "x", "2": {"goto": "y", "say": ["a", "b"]}, "*": "z"}) == {"1": "1", "a": "2", "b": "2"}
    assert match_text("Buy something.", ["Sales", "buy something"]) == "buy something"
    assert match_text("one", ["1"]) == "1"
    assert match_text("hello", None) == "hello" and match_text("hello", ["hi"]) is None
    assert spoken_digits("four two oh 7") == "4207" and spoken_digits("forty") is None


# -- the vad plugin keeps the utterance -------------------------------------------------------


def test_vad_keeps_the_utterance_with_preroll_and_voiced_length() -> None:
    rig = AudioRig(vad_plugin)
    call = rig.call()
    spoken = speech("support please", "en-us")
    signal = np.concatenate([silence(1.0), spoken, silence(1.5)])
    kinds = []
    for frame in frames(signal):
        rig.step([call], frame[None, :].copy())
        kinds += [e.kind for e in events(call) if isinstance(e, SpeechEvent)]
    state = call.data["vad"]
    assert kinds == ["start", "end"] and state["utterance_seq"] == 1
    utterance = state["utterance"]
    loud = np.flatnonzero(np.abs(spoken.astype(np.int32)) > 300)
    voiced_seconds = (loud[-1] - loud[0]) / 8000
    # 300 ms pre-roll + the speech + at most 200 ms tail (and a frame of rounding each side)
    assert voiced_seconds + 0.2 <= len(utterance) / 8000 <= voiced_seconds + 0.3 + 0.2 + 0.1
    assert np.array_equal(utterance[:800], np.zeros(800, np.int16))  # pre-roll silence first
    assert 0.5 * voiced_seconds * 1000 <= state["voiced_ms"] <= voiced_seconds * 1000 + 40


@pytest.mark.parametrize("config", [{"plugins": {"vad": {"max_utterance_ms": 400}}}])
def test_vad_utterance_is_capped(config: dict) -> None:
    rig = AudioRig(vad_plugin, config=config)
    call = rig.call()
    for frame in frames(np.concatenate([silence(0.5), speech("one two three four five six"), silence(1.0)])):
        rig.step([call], frame[None, :].copy())
    assert len(call.data["vad"]["utterance"]) == 400 * 8
    vad_plugin.ivr_configure({})


def test_the_example_voicebot_flow(tmp_path: Path) -> None:
    flow = Path(__file__).resolve().parent.parent / "flows" / "voicebot.yaml"
    result = run_simulation(flow, say="billing question@7, four two oh nine@10")
    assert result.vars["account"] == "4209"
    result = run_simulation(flow, say="help@2, the printer is on fire@9")
    assert result.vars["problem"] == "the printer is on fire"
    result = run_simulation(flow, say="help@2", dtmf="@9 1")  # a key instead of words: back to the menu
    assert [e.node for e in result.trace if e.event == "enter"][:3] == ["main_menu", "support", "main_menu"]


# -- speech edge cases of the digit timer logic (issue 23) -------------------------------------


def test_type_ahead_keys_do_not_silence_a_speech_only_menu(tmp_path: Path) -> None:
    # Keys typed during the previous prompt are no answer to a speech-only menu: they are
    # dropped, and the menu still plays its prompt and listens (it used to skip the prompt and
    # stop listening, so the caller's answer went unheard: no_input three times, exhausted).
    body = MENU.replace("input: [dtmf, speech]", "input: speech").replace(
        "start: menu", "start: intro").replace(
        "nodes:\n", 'nodes:\n      intro: {{play: {{tone: "440", duration: 2s}}, next: menu}}\n', 1)
    result = run_simulation(write(tmp_path, body.format(extra="")), dtmf="@1 12", say="support@3.5")
    assert trace_events(result.trace, "ignored") == [(1.0, "menu", "dtmf 12")]
    assert not trace_events(result.trace, "type-ahead")
    assert [(t, d) for t, n, d in trace_events(result.trace, "play") if n == "menu"] == [(1.0, "tone 440 2s")]
    assert visited(result.trace) == ["intro", "menu", "support", "bye"]


def test_a_key_ends_listening_for_the_rest_of_the_entry(tmp_path: Path) -> None:
    body = """\
        start: ask
        nodes:
          ask:
            collect: {prompt: {tone: "440", duration: 2s}, input: [dtmf, speech], max_digits: 4,
                      inter_digit_timeout: 2s}
            on: {no_match: ask}
            next: done
          done: {hangup: }
    """
    result = run_simulation(write(tmp_path, body), dtmf="@2.5 1", say="two@3.0")
    assert trace_events(result.trace, "speech")[0] == (2.5, "ask", "cancelled by dtmf")
    # the words after the key are not heard: the entry is the key, ended by the inter-digit timer
    # (and the words it no longer listens to do not restart the timer)
    assert trace_events(result.trace, "timer") == [(4.5, "ask", "inter-digit timeout 2s")]
    assert not trace_events(result.trace, "recognised")
    assert result.vars["digits"] == "1" and "speech" not in result.vars


def test_keyed_type_ahead_is_not_a_cancelled_utterance(tmp_path: Path) -> None:
    body = """\
        start: intro
        nodes:
          intro: {play: {tone: "440", duration: 2s}, next: ask}
          ask:
            collect: {prompt: {tone: "350", duration: 1s}, max_digits: 2}
            next: done
          done: {hangup: }
    """
    result = run_simulation(write(tmp_path, body), dtmf="@1 42")
    assert result.vars["digits"] == "42"
    assert not trace_events(result.trace, "speech")


MAX_SPEECH = """\
    start: ask
    nodes:
      ask:
        {action}
        on: {{no_match: sorry, no_input: sorry}}
      ok: {{hangup: }}
      sorry: {{hangup: }}
"""


@pytest.mark.parametrize("action", [
    'collect: {prompt: {tone: "440", duration: 2s}, input: [dtmf, speech], max_speech: 4s, save_as: code}',
    'menu: {prompt: {tone: "440", duration: 2s}, input: [dtmf, speech], max_speech: 4s, '
    'options: {"1": ok}, patterns: {"[0-9]*": ok}, max_invalid: 1}',
])
def test_an_utterance_longer_than_max_speech_is_no_match(tmp_path: Path, action: str) -> None:
    # a speech start whose end never comes (a stuck line): no_match after max_speech, never a
    # digit entry (not even for a pattern that takes the empty string)
    result = run_simulation(write(tmp_path, MAX_SPEECH.format(action=action)), speech="start@2.5")
    assert trace_events(result.trace, "speech")[-1] == (6.5, "ask", "longer than max_speech 4s")
    assert trace_events(result.trace, "outcome")[0][1:] == ("ask", "exhausted" if "menu" in action else "no_match")
    if "menu" in action:
        assert trace_events(result.trace, "no_match") == [(6.5, "ask", "'' (1/1)")]
    else:
        assert visited(result.trace)[-1] == "sorry" and "code" not in result.vars


def test_max_speech_defaults_to_15s(tmp_path: Path) -> None:
    action = 'collect: {prompt: {tone: "440", duration: 2s}, input: [dtmf, speech]}'
    result = run_simulation(write(tmp_path, MAX_SPEECH.format(action=action)), speech="start@2.5")
    assert trace_events(result.trace, "speech")[-1] == (17.5, "ask", "longer than max_speech 15s")


def test_a_too_short_utterance_is_ignored_and_the_first_digit_timer_goes_on(tmp_path: Path) -> None:
    result = menu(tmp_path, "min_speech: 500ms\n          on: {no_input: sorry}", say="mm@2.5")
    assert trace_events(result.trace, "speech")[-1] == (2.96, "menu", "too short, ignored")
    # the entry goes on: the first-digit timer (3 s) from the last event, then no_input
    assert trace_events(result.trace, "timer") == [(5.96, "menu", "first-digit timeout 3s")]
    assert trace_events(result.trace, "outcome")[0] == (5.96, "menu", "no_input")
    # a long enough answer after a short sound is still heard
    result = menu(tmp_path, "min_speech: 500ms", say="mm@2.5, buy something@4")
    assert visited(result.trace)[1] == "sales"


def test_a_said_option_is_saved_by_its_key(tmp_path: Path) -> None:
    result = menu(tmp_path, "save_as: choice", say="buy something@2.5")
    assert result.vars["choice"] == "1"


def test_no_match_falls_back_to_the_invalid_prompt_and_no_input_to_the_timeout_prompt(tmp_path: Path) -> None:
    extra = ('invalid_prompt: {tone: "300", duration: 1s}\n          timeout_prompt: {tone: "310", duration: 1s}\n'
             '          max_invalid: 2\n          max_timeouts: 2')
    result = menu(tmp_path, extra, say="pizza@2.5")
    plays = [d for _, n, d in trace_events(result.trace, "play") if n == "menu"]
    assert plays[:2] == ["tone 440 2s", "tone 300 1s"]  # no_match: the invalid prompt
    assert "tone 310 1s" in plays  # silence afterwards: no_input, the timeout prompt
    # no_input counts toward max_timeouts (2), not max_invalid: exhausted on the 2nd silence
    assert [d for _, _, d in trace_events(result.trace, "no_input")] == ["'' (1/2)", "'' (2/2)"]
    assert [d for _, _, d in trace_events(result.trace, "no_match")] == ["'' (1/2)"]
    assert trace_events(result.trace, "outcome")[0][2] == "exhausted"


def test_collect_silence_with_speech_input_is_no_input(tmp_path: Path) -> None:
    body = """\
        start: ask
        nodes:
          ask:
            collect: {prompt: {tone: "440", duration: 1s}, input: [dtmf, speech], timeout: 2s}
            on: {no_input: quiet, timeout: old}
          quiet: {hangup: }
          old: {hangup: }
    """
    result = run_simulation(write(tmp_path, body))
    assert trace_events(result.trace, "outcome")[0] == (3.0, "ask", "no_input")


def test_keys_pressed_during_an_unbargeable_prompt_of_a_speech_only_menu_are_ignored(tmp_path: Path) -> None:
    body = MENU.replace("input: [dtmf, speech]", "input: speech").replace(
        "defaults: {{barge_in: [dtmf, speech]}}", "defaults: {{barge_in: none}}")
    result = run_simulation(write(tmp_path, body.format(extra="")), dtmf="@0.5 12", say="support@2.5")
    assert trace_events(result.trace, "ignored") == [(2.0, "menu", "dtmf 12")]
    assert visited(result.trace)[1] == "support"


class HalfSureRecogniser:
    """An ``ivr_stt`` engine that hears "support" with confidence 0.5, and notes its options."""

    def __init__(self) -> None:
        self.options: list[dict] = []

    @hookimpl
    def ivr_stt(self, call, pcm, options):
        self.options.append(options)
        return "support", 0.5


def test_the_node_min_confidence_reaches_the_recogniser(tmp_path: Path) -> None:
    engine = HalfSureRecogniser()
    plugins = make_setup(("half_sure", engine)).plugins
    wav = write_wav(tmp_path / "answer.wav", np.zeros(8000, np.int16))
    routed = "on: {no_match: sorry}\n          min_confidence: FLOOR"
    result = run_simulation(write(tmp_path, MENU.format(extra=routed.replace("FLOOR", "0.6"))),
                            speech_wav=f"{wav}@2.5", plugins=plugins)
    assert engine.options[-1]["min_confidence"] == 0.6
    assert visited(result.trace)[1] == "sorry"  # 0.5 is under the node's 0.6
    result = run_simulation(write(tmp_path, MENU.format(extra=routed.replace("FLOOR", "0.4"))),
                            speech_wav=f"{wav}@2.5", plugins=plugins)
    assert visited(result.trace)[1] == "support"


class InterruptedRecogniser:
    """An ``ivr_stt`` engine during whose work the caller presses "2": it reports the key on the
    call's loop and answers only once the flow has traced the cancellation."""

    def __init__(self) -> None:
        import threading

        self.loop = None
        self.cancelled = threading.Event()

    @hookimpl
    def ivr_call_started(self, call):
        import asyncio

        self.loop = asyncio.get_running_loop()

    @hookimpl
    def ivr_stt(self, call, pcm, options):
        self.loop.call_soon_threadsafe(call.report_dtmf, "2", "rfc4733")
        assert self.cancelled.wait(10)
        return "buy something", 1.0

    def trace(self, entry: TraceEntry) -> None:
        if entry.event == "speech" and entry.detail.startswith("cancelled by dtmf"):
            self.cancelled.set()


def test_a_key_pressed_during_recognition_wins(tmp_path: Path) -> None:
    engine = InterruptedRecogniser()
    plugins = make_setup(("interrupted", engine)).plugins
    wav = write_wav(tmp_path / "answer.wav", np.zeros(8000, np.int16))
    result = run_simulation(write(tmp_path, MENU.format(extra="")), speech_wav=f"{wav}@2.5", plugins=plugins,
                            trace_out=engine.trace)
    assert (3.5, "menu", "cancelled by dtmf 2") in trace_events(result.trace, "speech")
    assert visited(result.trace)[1] == "support"  # the key, not the words
    assert "speech" not in result.vars
