"""Client-side provider limits (fusion_dspy.limits): every caller of a limited LM is held to them."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import dspy
import pytest
from dspy import lm15

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.limits import LMLimits
from fusion_dspy.limits import limited_lm
from fusion_dspy.limits import stop_cause
from fusion_dspy.pool_config import load_pool_config
from fusion_dspy.testing import FakeEngine


def answers_ok(request):
    return {"answer": "ok"}


class Meter:
    """A responder that records when each call reached the engine (the engine's gauge counts overlaps)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.times = []

    def __call__(self, request):
        with self.lock:
            self.times.append(time.monotonic())
        return {"answer": "ok"}


def hammer(lm, calls, threads=8):
    predict = dspy.Predict("question -> answer")

    def one(i):
        with dspy.context(lm=lm):
            return predict(question=f"q{i}").answer

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(calls)))


def test_max_concurrent_holds_for_threaded_callers():
    engine = FakeEngine(name="x", responder=answers_ok, delay=0.03)
    lm = limited_lm(engine.lm(), LMLimits(max_concurrent=2))
    assert hammer(lm, 12) == ["ok"] * 12
    assert engine.gauge.peak == 2 and lm.limiter.calls == 12 and lm.limiter.max_in_flight == 2


def test_requests_per_window_hold():
    meter = Meter()
    lm = limited_lm(FakeEngine(name="x", responder=meter).lm(), LMLimits(requests_per_minute=4), window_s=0.4)
    hammer(lm, 10)
    times = sorted(meter.times)
    # No 4 + 1 calls ever started within one window (a little slack for the hop to the engine).
    assert all(times[i + 4] - times[i] >= 0.4 - 0.05 for i in range(len(times) - 4))
    assert lm.limiter.calls == 10 and lm.limiter.waited_s > 0


def test_tokens_per_window_hold():
    lm = limited_lm(FakeEngine(name="x").lm(), LMLimits(tokens_per_minute=1), window_s=0.25)
    start = time.monotonic()
    hammer(lm, 3, threads=1)
    # Each call spends more than the budget, so each next call waits for the window to pass.
    assert time.monotonic() - start >= 2 * 0.25 - 0.05 and lm.limiter.calls == 3


def test_limits_apply_inside_a_fuse_and_its_async_path():
    engine = FakeEngine(name="x", responder=answers_ok, delay=0.03)
    lm = limited_lm(engine.lm(), LMLimits(max_concurrent=2))
    fuse = Fuse("question -> answer", 6, teachers=[Teacher(lm, name="x", samples=6)], fusor=FakeEngine(name="f").lm(),
                guard=False)
    assert fuse(question="q").fusion.path == "fuse" and engine.gauge.peak == 2
    import asyncio

    engine = FakeEngine(name="y", delay=0.03)  # sleeps with asyncio.sleep on the async path
    alm = limited_lm(engine.lm(), LMLimits(max_concurrent=2))
    afuse = Fuse("question -> answer", 6, teachers=[Teacher(alm, name="y", samples=6)],
                 fusor=FakeEngine(name="f").lm())
    asyncio.run(afuse.acall(question="q2"))
    assert alm.limiter.max_in_flight == engine.gauge.peak == 2 and alm.limiter.calls == engine.calls == 6


def test_copies_share_the_limiter_and_pool_configs_build_limited_lms(tmp_path):
    config = {"teachers": [{"name": "a", "model": "fake/a", "limits": {"max_concurrent": 3,
                                                                       "requests_per_minute": 600}}],
              "fusors": [{"name": "f", "model": "fake/f"}]}
    (tmp_path / "pool.json").write_text(json.dumps(config))
    loaded = load_pool_config(tmp_path / "pool.json")
    [teacher] = loaded.build_teachers()
    assert teacher.lm.limiter.limits.max_concurrent == 3 and isinstance(teacher.lm, dspy.LM)
    assert teacher.lm.copy(temperature=0.3).limiter is teacher.lm.limiter
    assert not hasattr(loaded.build_fusors()["f"], "limiter")  # no limits: the plain LM
    config["teachers"][0]["limits"] = {"max_concurrent": 0}
    (tmp_path / "pool.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="max_concurrent"):
        load_pool_config(tmp_path / "pool.json")


def test_rate_limits_are_retried_by_dspy_then_counted_and_paused():
    state = {"calls": 0}

    def flaky(request):
        state["calls"] += 1
        if state["calls"] == 1:
            raise lm15.RateLimitError("slow down", retry_after=0.01)
        return {"answer": "ok"}

    lm = limited_lm(FakeEngine(name="x", responder=flaky).lm(num_retries=2), LMLimits(max_concurrent=4))
    assert hammer(lm, 1, threads=1) == ["ok"] and state["calls"] == 2  # DSPy's own retry loop, no second one
    assert lm.limiter.rate_limited == 0 and lm.limiter.retries == 1 and lm.limiter.calls == 1

    always = limited_lm(FakeEngine(name="y", responder=lambda r: (_ for _ in ()).throw(
        lm15.RateLimitError("slow down", retry_after=0.01))).lm(num_retries=1),
        LMLimits(max_concurrent=4, rate_limit_pause_s=0.2))
    with pytest.raises(Exception):  # noqa: B017 - whichever error DSPy wraps the rate limit in
        hammer(always, 1, threads=1)
    assert always.limiter.rate_limited == 1 and always.limiter._paused_until > time.monotonic()


def test_stop_cause_names_hard_quota_errors_only():
    lm = FakeEngine(name="x", responder=lambda r: (_ for _ in ()).throw(lm15.BillingError("quota"))).lm()
    with pytest.raises(Exception) as caught:
        with dspy.context(lm=lm):
            dspy.Predict("question -> answer")(question="q")
    assert "LMBillingError" in stop_cause(caught.value)
    assert stop_cause(RuntimeError("x")) is None
    assert stop_cause(None, [("teacher 'a'", "LMRateLimitError")]) is None
    assert stop_cause(None, [("teacher 'a'", "LMAuthError")]) == "teacher 'a': LMAuthError"
