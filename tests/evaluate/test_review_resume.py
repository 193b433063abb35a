"""Resuming a harness journal with another N list: no result written twice, no candidate set changed."""

from __future__ import annotations

import collections
import json

from tests.evaluate.builders import fails_on_first_request
from tests.evaluate.builders import toy_harness


def _results(out_dir):
    lines = (out_dir / "results.jsonl").read_text().splitlines()
    return [json.loads(line)["result"] for line in lines if '"kind": "result"' in line]


def test_a_rerun_with_fewer_ns_reuses_the_journaled_candidates_and_duplicates_no_result(tmp_path):
    harness, _ = toy_harness(tmp_path, count=3, delayed=False)
    harness.run()
    before = len(_results(tmp_path))
    again, (a, b, fusor) = toy_harness(tmp_path, count=3, delayed=False)
    again.ns = [2]  # the largest N is now 2: its candidates are the first 2 of the journaled N=4 ones
    again.run()
    keys = collections.Counter((r["example"], r["method"], r["n"]) for r in _results(tmp_path))
    assert (a.calls, b.calls, fusor.calls) == (0, 0, 0)
    assert max(keys.values()) == 1, [k for k, v in keys.items() if v > 1]
    assert len(_results(tmp_path)) == before


def test_a_rerun_with_a_larger_n_keeps_the_journaled_transient_failures_of_the_smaller_ns(tmp_path):
    """Teacher b times out on its first request per question (a transient fault: not stored). A run at N=2
    journals that failure and scores every N=2 method with it; adding N=4 must not ask b again for that draw
    and give the N=4 methods a candidate set in which it succeeded (the N=2 rows and single:b saw it fail)."""
    b_fails = fails_on_first_request("b")

    harness, (_, b, _) = toy_harness(tmp_path, count=3, delayed=False)
    b.fail = b_fails
    harness.ns = [2]
    harness.run()
    again, (_, b2, _) = toy_harness(tmp_path, count=3, delayed=False)
    b2.fail = b_fails
    again.run()  # ns [2, 4]
    entries = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    wide = [e["candidates"] for e in entries if e["kind"] == "candidates" and e["n"] == 4]
    assert len(wide) == 3
    assert [c["outputs"] is None for c in wide[0]] == [False, True, False, False]  # b's first draw failed again
    assert b2.calls == 3  # only b's second samples (index 3) were new draws


def test_a_program_that_hits_a_hard_quota_stops_the_run_and_is_not_journaled_as_a_zero(tmp_path):
    """A billing error of a compared program (the fusor alone) was journaled as a failed result scoring 0, so
    the resumed run, quota back, never asked again and the report kept the zeros. Like a draw's, it stops the
    run and journals nothing for that program."""
    import dspy
    import pytest
    from dspy import lm15

    from fusion_dspy.limits import QuotaExhaustedError
    from fusion_dspy.testing import FakeEngine

    quota = {"out": True}

    def respond(request):
        if quota["out"]:
            raise lm15.BillingError("You exceeded your current quota")
        return {"answer": "6"}

    alone = FakeEngine(name="alone", responder=respond)
    predictor = dspy.Predict("question, tag -> answer")

    def program(**inputs):
        with dspy.context(lm=alone.lm()):
            return predictor(**inputs)

    def build():
        harness, _ = toy_harness(tmp_path, count=3, delayed=False)
        harness.programs = {"alone:f": program}
        return harness

    with pytest.raises(QuotaExhaustedError):
        build().run()
    assert not [r for r in _results(tmp_path) if r["method"] == "alone:f"]
    quota["out"] = False
    report = build().run()
    assert report.get("alone:f", 1).count == 3 and report.get("alone:f", 1).errors == 0
    assert report.get("alone:f", 1).mean == 1 / 3  # "6" is q1's answer


def test_a_failing_guard_selector_is_a_reported_fault_not_the_end_of_the_run(tmp_path):
    """Best-of-N with a failing selector is a recorded fault; the same selector failing as the guard of
    `fusion+guard` (the baseline ranks the fused answer) ended the whole run with its RuntimeError."""
    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.selectors import MajorityVote
    from fusion_dspy.testing import FakeEngine
    from tests.evaluate.builders import metric
    from tests.evaluate.builders import more_examples
    from tests.evaluate.builders import teacher_engines

    class Broken(MajorityVote):
        name = "broken"

        def select(self, signature, inputs, candidates):
            raise RuntimeError("the judge's endpoint is down")

    a, b = teacher_engines()
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "answer": "6"})
    fuse = Fuse("question, tag -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                        Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    report = Harness(fuse=fuse, metric=metric, examples=more_examples(3), ns=[4], selectors=[Broken(), MajorityVote()],
                     out_dir=tmp_path, progress=False, resamples=100, plots=False, guard=True).run()
    guarded = report.get("fusion+guard", 4)
    assert guarded.count == 3 and guarded.errors == 3 and guarded.mean == 0.0
    assert all("selector 'broken' failed: RuntimeError" in fault for fault in guarded.faults)
    assert report.get("fusion", 4).errors == 0 and report.get("fusion", 4).mean == 1 / 3
