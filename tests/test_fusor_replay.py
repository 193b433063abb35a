"""A Fuse with a candidate store pays for a fusor reply once: the same fusor prompt is answered from the store.

Configurations that send the fusor the same prompt (the guard on and off, another selector, a mode
that ends up fusing) share one paid call, counted at its original cost, as stored candidates are.
"""

from __future__ import annotations

import threading

from fusion_dspy import Teacher
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import MemoryStore
from fusion_dspy.testing import FakeEngine
from tests.helpers import fusor_engine
from tests.helpers import make_fuse
from tests.helpers import teacher_engine


def pool():
    engines = [teacher_engine("a"), teacher_engine("b")]
    return engines, [Teacher(e.lm(), name=e.name) for e in engines]


def test_guard_on_and_off_share_one_fusor_call(call):
    store = MemoryStore()
    engines, teachers = pool()
    fusor = fusor_engine()
    plain = make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=store, guard=False)
    guarded = make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=store, guard=True)

    first = call(plain, question="q").fusion
    second = call(guarded, question="q").fusion

    assert fusor.calls == 1, f"the same fusor prompt was paid for {fusor.calls} times"
    assert sum(e.calls for e in engines) == 3
    assert first.fusor.cached is False and second.fusor.cached is True
    assert second.fusor.usage == first.fusor.usage and first.fusor.usage, "a replay keeps the original cost"
    assert second.fusor.comparison == first.fusor.comparison
    assert second.guard is not None, "the guarded Fuse still guards the replayed reply"
    assert second.spent_usage.calls == 0, "nothing was paid for in the second call"
    assert second.total_usage == first.total_usage, "the answer costs what it did"
    assert "fusor reply replayed" in second.summary()


def test_another_fusor_prompt_is_a_new_call(call):
    store = MemoryStore()
    _, teachers = pool()
    fusor = fusor_engine()
    fuse = make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=store)
    call(fuse, question="q")
    call(fuse, question="another question")
    assert fusor.calls == 2
    fuse.fusor.signature = fuse.fusor.signature.with_instructions("Merge the candidates into one answer.")
    report = call(fuse, question="q").fusion
    assert fusor.calls == 3, "a changed fusor instruction (a DSPy compile) must not be answered by the old prompt"
    assert report.fusor.cached is False


def test_a_malformed_fusor_reply_is_replayed_as_the_same_failure(call):
    store = MemoryStore()
    _, teachers = pool()
    fusor = FakeEngine(name="fusor", garbage=True)
    fuse = make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=store)
    first = call(fuse, question="q").fusion
    requests = fusor.calls  # DSPy's adapter asks again in JSON before it gives up
    second = call(fuse, question="q").fusion
    assert fusor.calls == requests, "a stored parse failure must be replayed, not paid for again"
    assert first.path == second.path == "select"
    assert second.fusor.cached is True and second.fusor.error_type == first.fusor.error_type == "AdapterParseError"


def test_a_fusor_fault_is_not_stored(call):
    store = MemoryStore()
    _, teachers = pool()
    fusor = FakeEngine(name="fusor", fail=True)
    fuse = make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=store)
    call(fuse, question="q")
    call(fuse, question="q")
    assert fusor.calls == 2, "a transient fault must be retried by the next call, not replayed"


def test_concurrent_calls_pay_for_one_fusor_reply():
    store = MemoryStore()
    _, teachers = pool()
    fusor = FakeEngine(name="fusor", delay=0.2,
                       responder=lambda request: {"comparison": "A and B agree.", "answer": "fused"})
    fuses = [make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=store, guard=guard)
             for guard in (False, True, False, True)]
    results = []
    threads = [threading.Thread(target=lambda f=f: results.append(f(question="q"))) for f in fuses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4
    assert fusor.calls == 1, f"4 concurrent calls with one fusor prompt made {fusor.calls} fusor calls"
    assert sum(r.fusion.fusor.cached for r in results) == 3
    assert {r.answer for r in results} <= {"fused"} | {c.outputs["answer"] for c in results[0].fusion.candidates}


def test_a_reopened_store_replays_the_fusor_reply(tmp_path):
    _, teachers = pool()
    fusor = fusor_engine()
    first = make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=JsonlStore(tmp_path / "s.jsonl"))(question="q")
    second = make_fuse(3, teachers=teachers, fusor=fusor.lm(), store=JsonlStore(tmp_path / "s.jsonl"))(question="q")
    assert fusor.calls == 1
    assert second.answer == first.answer
    assert second.fusion.fusor.usage == first.fusion.fusor.usage


def test_without_a_store_every_call_asks_the_fusor(call):
    _, teachers = pool()
    fusor = fusor_engine()
    fuse = make_fuse(3, teachers=teachers, fusor=fusor.lm())
    call(fuse, question="q")
    call(fuse, question="q")
    assert fusor.calls == 2
