"""Fuse(guard=True) (issue 11, item 1): the fused answer competes with the candidates under the selector."""

from __future__ import annotations

import asyncio
import json

import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.guard import FUSED_INDEX
from fusion_dspy.selectors import LLMJudge
from fusion_dspy.testing import FakeEngine
from tests.helpers import fusor_engine
from tests.helpers import teacher_engine

AGREED = "The capital of France is Paris."


@pytest.fixture(params=["forward", "aforward"])
def call(request):
    if request.param == "forward":
        return lambda fuse, **inputs: fuse(**inputs)
    return lambda fuse, **inputs: asyncio.run(fuse.acall(**inputs))


def agreeing_pool():
    texts = [AGREED, "The capital of France is Paris!", "Paris is the capital of France."]
    engines = [teacher_engine(f"t{i}", answer=text) for i, text in enumerate(texts)]
    return engines, [Teacher(e.lm(), name=f"t{i}") for i, e in enumerate(engines)]


def test_guard_is_off_by_default():
    engines, teachers = agreeing_pool()
    pred = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm())(question="q")
    assert pred.fusion.guard is None and pred.fusion.path == "fuse" and pred.answer == "zzz"


def test_an_outranked_fused_answer_is_replaced_without_an_extra_lm_call(call):
    engines, teachers = agreeing_pool()
    fusor = fusor_engine("zzz")
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor.lm(), guard=True)
    pred = call(fuse, question="q")
    guard = pred.fusion.guard
    assert pred.fusion.path == "guarded" and not guard.kept_fused and guard.selector == "mbr"
    chosen = next(c for c in pred.fusion.candidates if c.index == guard.index)
    assert pred.answer == chosen.outputs["answer"]
    assert set(guard.scores) == {FUSED_INDEX, 0, 1, 2} and guard.margin > 0
    assert guard.usage == {}  # MBR calls no model
    assert sum(e.calls for e in engines) + fusor.calls == 4  # n teachers + 1 fusor, nothing more
    assert "guard (mbr): returned candidate" in pred.fusion.summary()
    json.loads(pred.fusion.model_dump_json())


def test_a_fused_answer_that_ranks_first_is_kept(call):
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine(AGREED).lm(), guard=True,
                selector="majority")
    pred = call(fuse, question="q")
    assert pred.fusion.path == "fuse" and pred.fusion.guard.kept_fused and pred.answer == AGREED
    assert pred.fusion.guard.index == FUSED_INDEX and pred.fusion.attribution == 1.0
    assert "guard (majority): kept the fused answer" in pred.fusion.summary()


def test_an_llm_selector_ranks_all_n_plus_1_and_its_cost_is_in_the_report(call):
    def score(request):
        return {"reasoning": "r", "score": 9.0 if "zzz" in request.inputs["candidate"] else 3.0}

    judge = FakeEngine(name="judge", responder=score)
    engines, teachers = agreeing_pool()
    fuse = Fuse("question -> answer", 3, teachers=teachers, fusor=fusor_engine("zzz").lm(), guard=True,
                selector=LLMJudge(lm=judge.lm()))
    pred = call(fuse, question="q")
    guard = pred.fusion.guard
    assert guard.kept_fused and pred.answer == "zzz" and judge.calls == 4
    assert guard.usage["local/judge"].calls == 4 and pred.fusion.usage["local/judge"].calls == 4
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
