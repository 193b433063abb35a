"""Whole-program save: ``program.save(path, save_program=True)`` + ``dspy.load(path, allow_pickle=True)``."""

from __future__ import annotations

import dspy
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import MemoryStore
from tests.helpers import fusor_engine
from tests.helpers import teacher_engine


class Program(dspy.Module):
    def __init__(self, fuse: Fuse) -> None:
        super().__init__()
        self.answer = fuse

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question)


def _round_trip(program: dspy.Module, tmp_path) -> dspy.Module:
    path = tmp_path / "program"
    program.save(str(path), save_program=True)
    return dspy.load(str(path), allow_pickle=True)


def test_program_with_real_lms_round_trips(tmp_path):
    teachers = [Teacher(dspy.LM("openai/gpt-4o-mini"), name="mini", temperature=0.9, samples=2),
                Teacher(dspy.LM("anthropic/claude-3-haiku"), name="haiku")]
    program = Program(Fuse("question -> answer", 3, teachers=teachers, fusor=dspy.LM("openai/gpt-4o"),
                           selector=MajorityVote(fields=["answer"]), timeout=5.0))
    loaded = _round_trip(program, tmp_path)  # today: "Teacher is immutable" on load
    fuse = loaded.answer
    assert fuse.settings == program.answer.settings
    assert [(t.name, t.temperature, t.samples, t.lm.model) for t in fuse.teachers] == [
        ("mini", 0.9, 2, "openai/gpt-4o-mini"), ("haiku", 0.7, 1, "anthropic/claude-3-haiku")]
    assert fuse.fusor_lm.model == "openai/gpt-4o" and fuse.timeout == 5.0
    assert fuse.selector.fields == ("answer",)
    assert fuse.pool.teachers["mini"] is fuse.teachers[0]  # one object, as before saving


@pytest.mark.parametrize("store_kind", ["memory", "jsonl"])
def test_program_with_fake_lms_and_a_store_round_trips_and_still_runs(tmp_path, store_kind):
    store = MemoryStore() if store_kind == "memory" else JsonlStore(tmp_path / "bank.jsonl")
    teachers = [Teacher(teacher_engine("a").lm(), name="a"), Teacher(teacher_engine("b").lm(), name="b")]
    program = Program(Fuse("question -> answer", 2, teachers=teachers, fusor=fusor_engine("F").lm(), store=store,
                           guard=False))  # the fused "F" shows the fusor ran (the guard round trip: test_fuse_guard)
    first = program(question="q")
    loaded = _round_trip(program, tmp_path)  # today: "cannot pickle '_thread.lock'" on save
    again = loaded(question="q")
    assert again.answer == first.answer == "F"
    # The store came along (or was re-opened from its file): no teacher is asked again.
    assert [c.cached for c in again.fusion.candidates] == [True, True]
    assert [c.outputs for c in again.fusion.candidates] == [c.outputs for c in first.fusion.candidates]
    loaded_store = loaded.answer.store
    assert loaded_store is not store and len(loaded_store) == 3  # two draws and the fusor's reply
    assert again.fusion.fusor.cached, "the fusor's reply came along with the store"
    assert loaded_store.claim("new-key") and loaded_store.claim("new-key") is False  # fresh claims work
    loaded_store.release("new-key")
