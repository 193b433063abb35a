"""Candidate stores through Fuse: re-use at original cost and latency, replayed parse failures,
crash-safe JSON Lines."""

from __future__ import annotations

import logging

import dspy

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.store import FUSOR_KEY_PREFIX
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import MemoryStore
from fusion_dspy.store import StoredDraw
from fusion_dspy.testing import FakeEngine
from tests.helpers import Person
from tests.helpers import Typed
from tests.helpers import fusor_engine
from tests.helpers import make_fuse
from tests.helpers import teacher_engine


def test_store_reuses_draws_across_configurations_and_keeps_their_cost(tmp_path):
    a_engine, b_engine = teacher_engine("a"), teacher_engine("b")
    teachers = [Teacher(a_engine.lm(), name="a"), Teacher(b_engine.lm(), name="b")]
    store = JsonlStore(tmp_path / "bank.jsonl")
    fuse = make_fuse(4, teachers=teachers, store=store)
    first = fuse(question="q")
    assert a_engine.calls + b_engine.calls == 4 and len(store) == 5  # four draws and the fusor's reply
    fuse.configure(n=2, mode="select")  # a subset of the same draws
    second = fuse(question="q")
    assert a_engine.calls + b_engine.calls == 4
    assert all(c.cached for c in second.fusion.candidates)
    assert second.fusion.total_usage.input_tokens > 0 and second.fusion.spent_usage.calls == 0
    assert "replayed without a model call: 2 (counted at their original cost)" in second.fusion.summary()
    assert [c.outputs for c in second.fusion.candidates] == [c.outputs for c in first.fusion.candidates[:2]]

    reopened = JsonlStore(tmp_path / "bank.jsonl")  # a new process sees the same bank
    assert len(reopened) == 5
    again = make_fuse(4, teachers=teachers, store=reopened)(question="q")
    assert a_engine.calls + b_engine.calls == 4 and all(c.cached for c in again.fusion.candidates)


def test_store_skips_torn_lines_and_restores_typed_outputs(tmp_path):
    store = JsonlStore(tmp_path / "bank.jsonl")
    teacher = FakeEngine(name="t")
    fuse = Fuse(Typed, n=2, teachers=[Teacher(teacher.lm(), name="t")], fusor=FakeEngine(name="f").lm(),
                mode="select", store=store)
    fuse(question="q")
    with (tmp_path / "bank.jsonl").open("a") as handle:
        handle.write('{"key": "torn", "outp')  # a process killed mid-write
    reopened = JsonlStore(tmp_path / "bank.jsonl")
    assert reopened.skipped_lines == 1 and len(reopened) == 2
    fuse.store = reopened
    pred = fuse(question="q")
    assert teacher.calls == 2
    assert all(isinstance(c.outputs["person"], Person) for c in pred.fusion.candidates)
    assert isinstance(pred.person, Person)


def test_store_replays_parse_failures_but_retries_transient_faults(tmp_path):
    junk_engine = teacher_engine("junk", garbage=True)
    flaky_calls = []
    flaky_engine = teacher_engine("flaky", fail=lambda request: not flaky_calls.append(1) and len(flaky_calls) == 1)
    good_engine = teacher_engine("good")
    teachers = [Teacher(good_engine.lm(), name="good"), Teacher(junk_engine.lm(), name="junk"),
                Teacher(flaky_engine.lm(), name="flaky")]
    store = JsonlStore(tmp_path / "bank.jsonl")
    first = make_fuse(3, teachers=teachers, store=store, mode="select")(question="q")
    assert [c.error_type for c in first.fusion.candidates] == [None, "AdapterParseError", "LMUnexpectedError"]
    junk_calls = junk_engine.calls  # the ChatAdapter's attempt and DSPy's JSONAdapter retry
    assert junk_calls >= 1

    reopened = JsonlStore(tmp_path / "bank.jsonl")
    second = make_fuse(3, teachers=teachers, store=reopened, mode="select")(question="q")
    # The malformed answer is replayed (same candidate set, original cost, no new call); the transient
    # fault is not remembered, so the flaky teacher is asked again and now answers.
    assert (good_engine.calls, junk_engine.calls, flaky_engine.calls) == (1, junk_calls, 2)
    junk = second.fusion.candidates[1]
    assert junk.error_type == "AdapterParseError" and junk.cached and junk.error == first.fusion.candidates[1].error
    assert junk.usage == first.fusion.candidates[1].usage and junk.usage["local/junk"].calls == junk_calls
    assert second.fusion.candidates[2].ok and not second.fusion.candidates[2].cached


def test_stored_candidates_keep_their_original_latency(tmp_path):
    slow = Teacher(teacher_engine("slow", delay=0.2).lm(), name="slow")
    store = JsonlStore(tmp_path / "bank.jsonl")
    first = make_fuse(2, teachers=[slow], store=store, mode="select")(question="q")
    again = make_fuse(2, teachers=[slow], store=JsonlStore(tmp_path / "bank.jsonl"), mode="select")(question="q")
    assert all(c.latency_s >= 0.2 for c in again.fusion.candidates)
    assert [c.latency_s for c in again.fusion.candidates] == [c.latency_s for c in first.fusion.candidates]


def test_a_write_after_a_torn_line_is_not_lost(tmp_path):
    path = tmp_path / "bank.jsonl"
    path.write_text('{"key": "torn", "outp', encoding="utf-8")  # killed mid-write, no newline
    store = JsonlStore(path)
    assert store.skipped_lines == 1  # the fragment is cut off on open
    store.put("k1", StoredDraw(outputs={"answer": "x"}, usage={}))
    store.put("k2", StoredDraw(outputs={"answer": "y"}, usage={}))
    reopened = JsonlStore(path)
    assert reopened.skipped_lines == 0
    assert reopened.get("k1").outputs == {"answer": "x"} and reopened.get("k2").outputs == {"answer": "y"}


def test_a_changed_output_type_gets_its_own_draws():
    """``answer`` and ``answer: int`` have the same field names, not the same task."""
    engine = FakeEngine(name="t", responder=lambda r: {"answer": "forty-two" if r.outputs["answer"] == "str" else 42})
    store = MemoryStore()
    teacher = Teacher(engine.lm(), name="t")
    text = Fuse("question -> answer", 2, teachers=[teacher], fusor=fusor_engine().lm(), mode="select", store=store)
    assert text(question="q").answer == "forty-two"
    number = Fuse("question -> answer: int", 2, teachers=[teacher], fusor=fusor_engine().lm(), mode="select",
                  store=store)
    pred = number(question="q")
    assert pred.answer == 42 and engine.calls == 4 and not any(c.cached for c in pred.fusion.candidates)


def test_a_changed_field_description_or_instruction_gets_its_own_draws_and_fusor_reply():
    class French(dspy.Signature):
        """Answer the question."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField(desc="in French")

    German = French.with_updated_fields("answer", desc="in German")
    Terse = French.with_instructions("Answer the question tersely.")
    teacher = FakeEngine(name="t", responder=lambda r: {"answer": "de" if "German" in r.system else "fr"})
    fusor = FakeEngine(name="fusor", responder=lambda r: {"comparison": "c", "answer": "de" if "German" in r.system
                                                            else "fr"})
    store = MemoryStore()
    answers = [Fuse(signature, 2, teachers=[Teacher(teacher.lm(), name="t")], fusor=fusor.lm(), mode="fuse",
                    guard=False, store=store)(question="q").answer for signature in (French, German, Terse)]
    assert answers == ["fr", "de", "fr"]
    assert teacher.calls == 6 and fusor.calls == 3  # nothing replayed across the three prompts
    assert len(store) == 9


def test_a_stored_entry_that_no_longer_fits_the_signature_is_generated_again(caplog):
    teacher = teacher_engine("t", answer=42)
    fusor = FakeEngine(name="fusor", responder=lambda r: {"comparison": "c", "answer": 7})
    store = MemoryStore()
    fuse = Fuse("question -> answer: int", 2, teachers=[Teacher(teacher.lm(), name="t")], fusor=fusor.lm(),
                mode="fuse", guard=False, store=store)
    assert fuse(question="q").answer == 7
    for key in store.keys():  # e.g. written by an older version of the program, or by hand
        entry = store.get(key)
        store.put(key, StoredDraw(outputs={**entry.outputs, "answer": "forty-two"}, usage=entry.usage))
    with caplog.at_level(logging.WARNING, logger="fusion_dspy"):
        pred = fuse(question="q")
    assert pred.answer == 7 and not any(c.cached for c in pred.fusion.candidates) and not pred.fusion.fusor.cached
    assert teacher.calls == 4 and fusor.calls == 2
    stale = [r for r in caplog.records if "does not fit" in r.getMessage()]
    assert len(stale) == 3 and sum(FUSOR_KEY_PREFIX in r.getMessage() for r in stale) == 1  # each entry, once
    again = fuse(question="q")  # the entries were replaced by the new answers
    assert teacher.calls == 4 and fusor.calls == 2 and again.fusion.fusor.cached


def test_json_lines_that_are_no_draw_are_skipped_not_fatal(tmp_path):
    """A line that parses as JSON but has the wrong shape (written by hand, or by another tool) is skipped
    and counted; it must not make the whole bank unreadable."""
    path = tmp_path / "bank.jsonl"
    good = '{"key": "good", "outputs": {"answer": "x"}, "usage": {}}\n'
    bad = [
        '{"key": "a", "outputs": null, "usage": null}\n',
        '{"key": "b", "outputs": {"answer": "y"}, "usage": ["local/t"]}\n',
        '{"key": "c", "outputs": {"answer": "y"}, "usage": {"local/t": [1, 2]}}\n',
        '{"key": "d", "outputs": {"answer": "y"}, "usage": "lots"}\n',
    ]
    path.write_text(good + "".join(bad), encoding="utf-8")
    store = JsonlStore(path)
    assert store.get("good").outputs == {"answer": "x"}
    assert len(store) == 1 and store.skipped_lines == 4
    with path.open("a", encoding="utf-8") as handle:  # another process appends the same kinds of lines
        handle.write(bad[0] + '{"key": "later", "outputs": {"answer": "z"}, "usage": {}}\n')
    store.reload()
    assert store.get("later").outputs == {"answer": "z"} and len(store) == 2 and store.skipped_lines == 5


def test_bad_arguments_are_named_in_the_error(tmp_path):
    import pytest

    for bad in (None, 5, ""):
        with pytest.raises(TypeError if bad != "" else ValueError, match="JsonlStore: path"):
            JsonlStore(bad)
    with pytest.raises(ValueError, match="JsonlStore: path .* is a directory"):
        JsonlStore(tmp_path)
    draw = StoredDraw(outputs={"answer": "x"}, usage={})
    for store in (MemoryStore(), JsonlStore(tmp_path / "bank.jsonl")):
        with pytest.raises(TypeError, match=r"put\(key, draw\): draw must be a StoredDraw"):
            store.put("k", {"answer": "x"})
        with pytest.raises(TypeError, match=r"put\(key, draw\): key must be a str"):
            store.put(5, draw)
        assert len(store) == 0 and store.get("k") is None
    bank = tmp_path / "bank.jsonl"
    assert not bank.exists() or bank.read_text() == "", "a rejected put must write nothing"
