"""The selection guard (issue 11, item 1): the fused answer competes with the candidates under the selector.

Its default is auto (``guard=None``): on when the selector ranks without an LM call, off otherwise.
"""

from __future__ import annotations

import json

import pytest

from fusion_dspy import Fuse
from fusion_dspy import FuseSettings
from fusion_dspy import Teacher
from fusion_dspy.config import SettingsError
from fusion_dspy.guard import FUSED_INDEX
from fusion_dspy.selectors import LLMJudge
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.selectors import MBRSelector
from fusion_dspy.selectors import RewardSelector
from fusion_dspy.selectors import Selection
from fusion_dspy.selectors import Selector
from fusion_dspy.selectors import UniversalSelfConsistency
from fusion_dspy.testing import FakeEngine
from tests.helpers import fusor_engine
from tests.helpers import teacher_engine

AGREED = "The capital of France is Paris."


def agreeing_pool():
    texts = [AGREED, "The capital of France is Paris!", "Paris is the capital of France."]
    engines = [teacher_engine(f"t{i}", answer=text) for i, text in enumerate(texts)]
    return engines, [Teacher(e.lm(), name=f"t{i}") for i, e in enumerate(engines)]


def reward(inputs, prediction):
    return float(len(prediction.answer))


class FirstOne(Selector):
    """A custom selector that does not declare calls_lm (so it may cost calls, for all the Fuse knows)."""

    name = "first-one"

    def select(self, signature, inputs, candidates):
        return Selection(position=0)


# Selector factories (built in the test, so the module collects on any version).
FREE = {"mbr": MBRSelector, "majority": MajorityVote, "reward": lambda: RewardSelector(reward_fn=reward)}
PAID = {"judge": LLMJudge, "usc": UniversalSelfConsistency, "custom-undeclared": FirstOne,
        "reward-llm": lambda: RewardSelector(reward_fn=reward, calls_lm=True)}


@pytest.mark.parametrize("mode", ["fuse", "auto"])
@pytest.mark.parametrize("make", FREE.values(), ids=FREE)
def test_auto_guard_is_on_when_the_selector_ranks_without_an_lm_call(make, mode):
    selector = make()
    assert selector.calls_lm is False
    assert FuseSettings(mode=mode).guard is None and FuseSettings(mode=mode).guard_enabled(selector) is True


@pytest.mark.parametrize("make", PAID.values(), ids=PAID)
def test_auto_guard_is_off_when_the_selector_would_need_lm_calls(make):
    selector = make()
    assert selector.calls_lm is True
    for mode in ("fuse", "auto", "select"):
        assert FuseSettings(mode=mode).guard_enabled(selector) is False


@pytest.mark.parametrize("make", [*FREE.values(), *PAID.values()], ids=[*FREE, *PAID])
def test_auto_guard_is_off_in_select_mode_and_explicit_values_win(make):
    selector = make()
    assert FuseSettings(mode="select").guard_enabled(selector) is False
    for mode in ("fuse", "auto", "select"):
        assert FuseSettings(mode=mode, guard=True).guard_enabled(selector) is True
        assert FuseSettings(mode=mode, guard=False).guard_enabled(selector) is False


def test_a_default_fuse_guards_with_mbr_at_no_extra_lm_call(call):
    engines, teachers = agreeing_pool()
    fusor = fusor_engine("zzz")
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor.lm())
    assert fuse.settings.guard is None
    pred = call(fuse, question="q")
    assert pred.fusion.path == "guarded" and pred.fusion.guard.selector == "mbr" and pred.answer != "zzz"
    assert pred.fusion.guard.usage == {} and sum(e.calls for e in engines) + fusor.calls == 4


def test_a_default_fuse_in_auto_mode_guards_a_fused_answer_with_majority(call):
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(), mode="auto",
                selector="majority")
    pred = call(fuse, question="q")
    assert pred.fusion.agreement < fuse.settings.agree  # no consensus: the fusor ran, then the guard
    assert pred.fusion.guard is not None and pred.fusion.guard.selector == "majority"


def test_a_default_fuse_with_an_llm_judge_does_not_guard(call):
    judge = FakeEngine(name="judge", responder=lambda r: {"reasoning": "r", "score": 5.0})
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(),
                selector=LLMJudge(lm=judge.lm()))
    pred = call(fuse, question="q")
    assert pred.fusion.path == "fuse" and pred.fusion.guard is None and pred.answer == "zzz"
    assert judge.calls == 0  # the judge is only the fallback here: no call


def test_guard_false_forces_plain_fusion_with_mbr(call):
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(), guard=False)
    pred = call(fuse, question="q")
    assert pred.fusion.path == "fuse" and pred.fusion.guard is None and pred.answer == "zzz"


def test_changing_the_selector_changes_the_auto_guard():
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm())
    fuse.configure(selector=LLMJudge(lm=FakeEngine(name="judge").lm()))
    assert fuse(question="q").fusion.guard is None
    fuse.configure(selector="majority")
    assert fuse(question="q").fusion.guard is not None


def test_summary_shows_the_effective_guard_and_whether_it_was_auto():
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm())
    assert "guard: on (auto: mbr ranks with no LM call)" in fuse.summary()
    assert "selector: mbr (no LM call)" in fuse.summary()
    fuse.configure(selector=LLMJudge())
    assert "guard: off (auto: judge ranks with LM calls)" in fuse.summary()
    fuse.configure(guard=True)
    assert "guard: on (set: guard=True)" in fuse.summary() and "guard=True" in repr(fuse)
    fuse.configure(selector="mbr", guard=False)
    assert "guard: off (set: guard=False)" in fuse.summary()
    select = Fuse("question -> answer", 3, teachers=teachers, mode="select")
    assert "guard: off (auto: mode='select' fuses nothing)" in select.summary() and "guard" not in repr(select)


@pytest.mark.parametrize("value", ["auto", "on", 1, 0.0, [True]])
def test_a_bad_guard_value_is_a_settings_error_naming_guard(value):
    engines, teachers = agreeing_pool()
    with pytest.raises(SettingsError, match=r"guard=.* is invalid: guard must be True or False .* or None for auto"):
        Fuse("question -> answer", 3, teachers=teachers, guard=value)
    fuse = Fuse("question -> answer", 3, teachers=teachers)
    with pytest.raises(SettingsError, match="guard"):
        fuse.configure(guard=value)
    assert fuse.settings.guard is None  # a failed configure changes nothing


def test_reward_selector_declares_calls_lm_as_a_bool():
    with pytest.raises(TypeError, match="calls_lm must be True"):
        RewardSelector(reward_fn=reward, calls_lm="yes")


def _saved(fuse, tmp_path, **config_changes):
    path = tmp_path / "fuse.json"
    fuse.save(str(path))
    state = json.loads(path.read_text())
    for key, value in config_changes.items():
        if value is ...:
            state["config"].pop(key)
        else:
            state["config"][key] = value
    path.write_text(json.dumps(state))
    return path


@pytest.mark.parametrize("saved", [None, True, False])
def test_save_and_load_round_trip_every_guard_value(tmp_path, saved):
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(), guard=saved)
    path = _saved(fuse, tmp_path)
    assert json.loads(path.read_text())["config"]["guard"] is saved
    for start in (None, True, False):  # whatever the loading Fuse had, the saved value wins
        fresh = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(), guard=start)
        fresh.load(str(path))
        assert fresh.settings.guard is saved


def test_an_old_save_with_guard_false_loads_as_an_explicit_false(tmp_path):
    engines, teachers = agreeing_pool()
    old = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm())
    path = _saved(old, tmp_path, guard=False)  # what the old default wrote
    fresh = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm())
    fresh.load(str(path))
    assert fresh.settings.guard is False and "guard: off (set: guard=False)" in fresh.summary()
    assert fresh(question="q").fusion.path == "fuse"


def test_a_save_from_before_the_guard_loads_with_the_auto_default(tmp_path):
    engines, teachers = agreeing_pool()
    path = _saved(Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm()), tmp_path,
                  guard=...)
    fresh = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(), guard=True)
    fresh.load(str(path))
    assert fresh.settings.guard is None


def test_an_outranked_fused_answer_is_replaced_without_an_extra_lm_call(call):
    engines, teachers = agreeing_pool()
    fusor = fusor_engine("zzz")
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor.lm(), guard=True)
    pred = call(fuse, question="q")
    guard = pred.fusion.guard
    assert pred.fusion.path == "guarded" and not guard.kept_fused and guard.selector == "mbr"
    chosen = next(c for c in pred.fusion.candidates if c.index == guard.index)
    assert pred.answer == chosen.outputs["answer"]
    assert guard.index == guard.pick == pred.fusion.candidates[0].index  # MBR's pick: what select returns
    assert set(guard.scores) == {FUSED_INDEX, guard.pick, *guard.references} and guard.margin > 0
    assert guard.rule == "pick-vs-fused" and guard.source not in guard.references
    assert guard.usage == {}  # MBR calls no model
    assert sum(e.calls for e in engines) + fusor.calls == 4  # n teachers + 1 fusor, nothing more
    assert "guard (mbr): returned the pick, candidate #" in pred.fusion.summary()
    json.loads(pred.fusion.model_dump_json())


def test_a_fused_answer_that_ranks_first_is_kept(call):
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine(AGREED).lm(), guard=True,
                selector="majority")
    pred = call(fuse, question="q")
    assert pred.fusion.path == "fuse" and pred.fusion.guard.kept_fused and pred.answer == AGREED
    assert pred.fusion.guard.index == FUSED_INDEX and pred.fusion.attribution == 1.0
    assert "guard (majority): kept the fused answer" in pred.fusion.summary()


def test_an_llm_selector_pays_both_rankings_and_their_cost_is_in_the_report(call):
    def score(request):
        return {"reasoning": "r", "score": 9.0 if "zzz" in request.inputs["candidate"] else 3.0}

    judge = FakeEngine(name="judge", responder=score)
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(), guard=True,
                selector=LLMJudge(lm=judge.lm()))
    pred = call(fuse, question="q")
    guard = pred.fusion.guard
    assert guard.kept_fused and pred.answer == "zzz"
    # The pick scores the 3 draws; the comparison scores the fused answer, the pick and 2 references
    # ("zzz" shares nothing with any draw, so its closest is the first, the pick itself: no draw is left out).
    assert guard.source == guard.pick and len(guard.references) == 2 and judge.calls == 3 + 4
    assert guard.usage["local/judge"].calls == 7 and pred.fusion.usage["local/judge"].calls == 7
    assert guard.margin == pytest.approx(-6.0)


def test_guard_is_configured_saved_and_loaded(tmp_path):
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm())
    fuse.configure(guard=True)
    assert fuse.settings.guard is True
    path = tmp_path / "fuse.json"
    fuse.save(str(path))
    assert json.loads(path.read_text())["config"]["guard"] is True
    fresh = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm())
    fresh.load(str(path))
    assert fresh.settings.guard is True and fresh(question="q").fusion.path == "guarded"
    with pytest.raises(ValueError):
        fuse.configure(guard="sometimes")


def test_the_guard_does_not_run_when_the_fusor_fails():
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine(fail=True).lm(), guard=True)
    pred = fuse(question="q")
    assert pred.fusion.path == "select" and pred.fusion.guard is None
