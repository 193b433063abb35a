"""The one runner (issue 9, item 7): context carried into threads, usage merged, faults kept."""

from __future__ import annotations

import asyncio
import copy
import gc
import threading
import time
import weakref

import dspy
import pytest

from fusion_dspy.sampling import Batch
from fusion_dspy.sampling import LMCall
from fusion_dspy.sampling import adrive
from fusion_dspy.sampling import apply_context
from fusion_dspy.sampling import capture_context
from fusion_dspy.sampling import drive
from fusion_dspy.sampling import lm_concurrency
from fusion_dspy.sampling import run_threads
from fusion_dspy.sampling import set_lm_concurrency
from fusion_dspy.testing import FakeEngine
from fusion_dspy.testing import InFlightGauge


def test_run_threads_carries_the_context_and_merges_usage():
    engine = FakeEngine(name="ctx", responder=lambda r: {"answer": "ok"})
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=engine.lm()), dspy.track_usage() as tracker:
        answers = run_threads(lambda q: predict(question=q).answer, ["a", "b", "c"], max_concurrency=2)
    assert answers == ["ok", "ok", "ok"]
    assert len(tracker.usage_data["local/ctx"]) == 3 == engine.calls


def test_run_threads_returns_errors_in_place_and_reraises_interrupts():
    def work(item):
        if item == 1:
            raise ValueError("bad item")
        return item * 10

    results = run_threads(work, [0, 1, 2])
    assert results[0] == 0 and results[2] == 20 and isinstance(results[1], ValueError)

    def interrupted(item):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_threads(interrupted, [0])


def test_run_threads_respects_max_concurrency():
    gauge = InFlightGauge()

    def work(item):
        with gauge:
            time.sleep(0.05)

    run_threads(work, range(8), max_concurrency=3)
    assert (gauge.peak, gauge.entered) == (3, 8)


def test_captured_context_applies_in_another_thread():
    engine = FakeEngine(name="far")
    with dspy.context(lm=engine.lm()):
        captured = capture_context()
    seen = []

    def elsewhere():
        with apply_context(captured):
            seen.append(dspy.settings.lm.model)
        seen.append(dspy.settings.lm)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert seen == ["local/far", None]


def test_the_per_lm_bound_is_shared_by_threads_and_event_loops():
    ends = []
    engine = FakeEngine(name="one", delay=0.2, responder=lambda r: ends.append(time.perf_counter()) or {})
    lm = engine.lm()
    set_lm_concurrency(lm, 1)
    predict = dspy.Predict("question -> answer")

    def steps():
        yield Batch((LMCall(predict, {"question": "s", "lm": lm}),), timeout=5.0)

    thread = threading.Thread(target=lambda: drive(steps()))
    thread.start()
    asyncio.run(adrive(steps()))
    thread.join()
    assert engine.calls == 2
    assert abs(ends[1] - ends[0]) >= 0.15  # one after the other, not together


def test_the_per_lm_bound_does_not_keep_an_lm_alive():
    from fusion_dspy import lm_slots

    predict = dspy.Predict("question -> answer")
    bounded, plain = FakeEngine(name="bounded").lm(), FakeEngine(name="plain").lm()
    set_lm_concurrency(bounded, 3)
    for lm in (bounded, plain):
        drive(_one_call(predict, lm))
    assert lm_concurrency(bounded) == 3 and lm_concurrency(plain) > 3
    assert lm_concurrency(copy.deepcopy(bounded)) != 3  # a copy is another LM, with slots of its own
    keys = {id(bounded), id(plain)}
    assert keys <= lm_slots._LM_SLOTS.keys()
    refs = [weakref.ref(bounded), weakref.ref(plain)]
    del lm, bounded, plain
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
    assert not keys & lm_slots._LM_SLOTS.keys()  # their entries went with them


def _one_call(predict, lm):
    # No timeout: the call runs in this thread (an idle pool thread would hold its last job a while).
    yield Batch((LMCall(predict, {"question": "q", "lm": lm}),))
