"""FakeEngine's own promises: the counts that the concurrency tests of this suite rely on."""

from __future__ import annotations

import asyncio
import pickle
import threading

import dspy
import pytest

from fusion_dspy.testing import FakeEngine
from fusion_dspy.testing import InFlightGauge

QA = "question -> answer"


def test_the_gauge_counts_threaded_calls_that_overlap():
    engine = FakeEngine(delay=0.2)
    lm = engine.lm()
    barrier = threading.Barrier(3)

    def ask(i):
        barrier.wait()
        with dspy.context(lm=lm):
            dspy.Predict(QA)(question=f"q{i}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (engine.gauge.peak, engine.gauge.current, engine.gauge.entered) == (3, 0, 3)


def test_the_gauge_counts_async_calls_that_overlap():
    engine = FakeEngine(delay=0.2)

    async def main():
        with dspy.context(lm=engine.lm()):
            await asyncio.gather(*(dspy.Predict(QA).acall(question=f"q{i}") for i in range(4)))

    asyncio.run(main())
    assert (engine.gauge.peak, engine.gauge.current, engine.calls) == (4, 0, 4)


def test_calls_one_after_another_never_overlap():
    engine = FakeEngine(delay=0.05)
    with dspy.context(lm=engine.lm()):
        for i in range(3):
            dspy.Predict(QA)(question=f"q{i}")
    assert (engine.gauge.peak, engine.gauge.entered) == (1, 3)


def test_a_shared_gauge_counts_across_engines_and_a_failed_call_leaves_it():
    gauge = InFlightGauge()
    good, bad = FakeEngine(name="good", gauge=gauge), FakeEngine(name="bad", fail=True, gauge=gauge)
    with dspy.context(lm=good.lm()):
        dspy.Predict(QA)(question="q")
    with dspy.context(lm=bad.lm(num_retries=0)), pytest.raises(Exception, match="told to fail"):
        dspy.Predict(QA)(question="q")
    assert good.gauge is bad.gauge is gauge
    assert (gauge.entered, gauge.current) == (2, 0)


def test_a_pickled_engine_keeps_its_counts_and_a_working_gauge():
    engine = FakeEngine()
    with dspy.context(lm=engine.lm()):
        dspy.Predict(QA)(question="q")
    copy = pickle.loads(pickle.dumps(engine))
    assert (copy.calls, copy.gauge.entered, copy.gauge.peak) == (1, 1, 1)
    with copy.gauge:
        assert copy.gauge.current == 1
