from __future__ import annotations

import json

import dspy
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.evaluate import EvalReport
from fusion_dspy.evaluate import Harness
from fusion_dspy.evaluate import example_id
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.testing import FakeEngine
from tests.evaluate.builders import GOLD
from tests.evaluate.builders import metric
from tests.evaluate.builders import more_examples
from tests.evaluate.builders import teacher_engines
from tests.evaluate.builders import toy_harness


def examples():
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in GOLD.items()]


def make(tmp_path, fusor_answer=None, plots=False):
    a, b = teacher_engines()
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "answer": fusor_answer or "2"})
    fuse = Fuse("question -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                    Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    harness = Harness(fuse=fuse, metric=metric, examples=examples(), ns=[1, 2, 4],
                      selectors=[MajorityVote(), "mbr"], out_dir=tmp_path, metric_name="EM", task="toy",
                      progress=False, resamples=200, plots=plots)
    return harness, (a, b, fusor)


def test_methods_scores_and_single_draw_per_candidate(tmp_path):
    harness, (a, b, fusor) = make(tmp_path)
    report = harness.run()
    # Every candidate was drawn once: 4 per example, although 3 N values x 3 methods used them.
    assert a.calls + b.calls == 12
    # The fusor ran once per example and N > 1 (N=1 is a single candidate, no fusion).
    assert fusor.calls == 6
    methods = {(m.method, m.n) for m in report.methods}
    assert methods == {(m, n) for m in ("fusion", "bon-majority", "bon-mbr", "random", "oracle") for n in (1, 2, 4)} | {
        ("single:a", 1), ("single:b", 1)}
    # Hand-checked: oracle at N=4 is right on every example; majority at N=4 picks 1 (tie->first), 6, 9.
    assert report.get("oracle", 4).mean == 1.0
    assert report.get("bon-majority", 4).mean == pytest.approx(2 / 3)
    assert report.get("single:a", 1).mean == pytest.approx(1 / 3)  # a's first answers: 1, 5, 9
    assert report.get("fusion", 4).mean == pytest.approx(1 / 3)  # the fusor always says 2
    assert report.get("fusion", 4).attribution is not None and report.get("fusion", 4).paths == {"fuse": 3}
    vs = report.get("fusion", 4).vs_baseline
    assert vs["diff"] == pytest.approx(1 / 3 - 2 / 3) and (vs["wins"], vs["ties"], vs["losses"]) == (1, 0, 2)
    assert report.get("bon-majority", 4).vs_baseline is None  # the baseline itself
    assert report.get("fusion", 4).input_tokens > report.get("bon-mbr", 4).input_tokens > 0


def test_report_files_and_schema(tmp_path):
    harness, _ = make(tmp_path, plots=True)
    harness.run()
    payload = json.loads((tmp_path / "report.json").read_text())
    report = EvalReport.model_validate(payload)
    assert report.baseline == "bon-majority" and report.ns == [1, 2, 4] and report.examples == 3
    row = payload["methods"][0]
    assert {"method", "n", "count", "mean", "ci_low", "ci_high", "vs_baseline", "input_tokens", "output_tokens",
            "time_s", "attribution", "paths", "errors"} <= set(row)
    table = (tmp_path / "report.md").read_text()
    assert table.startswith("| method | N | EM mean [95% CI]") and table.count("\n| ") == len(report.methods)
    for name in ("sample_efficiency.png", "cost_quality.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert results[0]["kind"] == "header" and {r["kind"] for r in results} == {"header", "candidates", "result"}


def test_rerun_resumes_without_any_lm_call(tmp_path):
    harness, _ = make(tmp_path)
    first = harness.run()
    again, (a, b, fusor) = make(tmp_path)
    second = again.run()
    assert a.calls == b.calls == fusor.calls == 0
    assert [m.mean for m in first.methods] == [m.mean for m in second.methods]


def test_partial_journal_resumes_only_missing_methods(tmp_path):
    harness, _ = make(tmp_path)
    harness.run()
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    last = example_id(examples()[-1])
    keep = [line for line in lines if not (last in line and '"bon-mbr"' in line)]
    path.write_text("\n".join(keep) + "\n" + lines[-1][: len(lines[-1]) // 2])  # and a torn tail
    again, (a, b, fusor) = make(tmp_path)
    report = again.run()
    assert a.calls == b.calls == fusor.calls == 0  # candidates come from the draw store
    assert report.get("bon-mbr", 4).count == 3


def test_changed_configuration_is_refused(tmp_path):
    harness, _ = make(tmp_path)
    harness.run()
    other, _ = make(tmp_path)
    other.fuse.configure(seed=7)
    with pytest.raises(ValueError, match="another configuration"):
        Harness(fuse=other.fuse, metric=metric, examples=examples(), ns=[1], out_dir=tmp_path, progress=False)


def test_exhausted_candidates_score_zero_not_crash(tmp_path):
    broken = FakeEngine(name="x", fail=True)
    fuse = Fuse("question -> answer", 2, teachers=[Teacher(broken.lm(), name="x", samples=2)],
                fusor=FakeEngine(name="f").lm())
    report = Harness(fuse=fuse, metric=metric, examples=examples()[:1], ns=[2], out_dir=tmp_path,
                     progress=False, resamples=50, plots=False).run()
    assert report.get("fusion", 2).mean == 0.0 and report.get("fusion", 2).errors == 1
    (fault,) = report.get("fusion", 2).faults
    assert "`fusion` N=2: 1 of 1 examples recorded a fault (1 x " in report.to_markdown()
    assert len(fault) > 0 and report.get("fusion", 2).faults[fault] == 1
    assert report.get("oracle", 2).mean == 0.0


def test_bad_arguments():
    harness_args = dict(fuse=Fuse("question -> answer", 1), metric=metric, out_dir="unused", progress=False)
    with pytest.raises(ValueError, match="ns must be positive"):
        Harness(examples=examples(), ns=[0], **harness_args)
    with pytest.raises(ValueError, match="examples is empty"):
        Harness(examples=[], ns=[1], **harness_args)


def test_selection_only_run_never_calls_the_fusor(tmp_path):
    a, b = teacher_engines()
    fusor = FakeEngine(name="f")
    fuse = Fuse("question -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                    Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    report = Harness(fuse=fuse, metric=metric, examples=examples(), ns=[2, 4], selectors=[MajorityVote()],
                     out_dir=tmp_path, progress=False, resamples=50, plots=False, include_fusion=False).run()
    assert fusor.calls == 0 and a.calls + b.calls == 12
    assert {m.method for m in report.methods} == {"bon-majority", "random", "oracle", "single:a", "single:b"}
    assert report.get("bon-majority", 4).mean == pytest.approx(2 / 3)


def _stats(report):
    return [(m.method, m.n, m.count, m.mean, m.ci_low, m.ci_high, m.vs_baseline, m.input_tokens, m.errors)
            for m in report.methods]


def make_concurrent(tmp_path, concurrency):
    """The toy harness over 12 examples, each after a different delay (so results of a concurrent
    run reach the journal out of order)."""
    return toy_harness(tmp_path, concurrency=concurrency)


def test_concurrent_harness_reports_the_same_paired_statistics(tmp_path):
    sequential, _ = make_concurrent(tmp_path / "seq", 1)
    expected = sequential.run()
    concurrent, (a, b, fusor) = make_concurrent(tmp_path / "conc", 6)
    got = concurrent.run()
    assert a.calls + b.calls == 4 * 12 and fusor.calls == 2 * 12  # every candidate drawn once, as sequentially
    order = [json.loads(line).get("example") for line in (tmp_path / "conc" / "results.jsonl").read_text().splitlines()]
    first_seen = list(dict.fromkeys(e for e in order if e))
    assert first_seen != [example_id(e) for e in more_examples()]  # results did arrive out of order
    assert _stats(got) == _stats(expected)
    assert concurrent.fuse.n == 4 and concurrent.fuse.mode == "fuse"  # the caller's Fuse is never re-configured


def test_report_statistics_do_not_depend_on_journal_order(tmp_path):
    import random

    harness, _ = make_concurrent(tmp_path, 1)
    expected = harness.run()
    path = tmp_path / "results.jsonl"
    header, *entries = path.read_text().splitlines()
    for seed in range(3):
        random.Random(seed).shuffle(entries)
        path.write_text("\n".join([header, *entries]) + "\n")
        again, _ = make_concurrent(tmp_path, 1)
        assert _stats(again.report()) == _stats(expected)


def test_bad_concurrency():
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        Harness(fuse=Fuse("question -> answer", 1), metric=metric, examples=examples(), ns=[1], out_dir="unused",
                progress=False, concurrency=0)


def test_a_hard_quota_stops_the_harness_cleanly_and_it_resumes(tmp_path):
    from dspy import lm15

    from fusion_dspy.limits import QuotaExhaustedError

    quota = {"out": True}
    harness, (a, b, fusor) = make_concurrent(tmp_path, 3)
    base = b.responder

    def respond(request):
        if quota["out"] and int(request.inputs["tag"]) >= 5:
            raise lm15.BillingError("You exceeded your current quota")
        return base(request)

    b.responder = respond
    with pytest.raises(QuotaExhaustedError, match="LMBillingError"):
        harness.run()
    quota["out"] = False
    again, _ = make_concurrent(tmp_path, 3)
    expected, _ = make_concurrent(tmp_path / "clean", 1)
    assert _stats(again.run()) == _stats(expected.run())  # no zero scores kept from the quota failures


def test_time_budget_stops_a_concurrent_run_and_the_next_run_continues(tmp_path):
    harness, _ = make_concurrent(tmp_path, 3)
    partial = harness.run(time_budget_s=0.0)
    assert 1 <= partial.examples <= 3 + 1  # the first finished example, plus those already in flight
    again, (a, b, _) = make_concurrent(tmp_path, 3)
    assert again.run().examples == 12
    assert a.calls + b.calls == 4 * (12 - partial.examples)  # finished examples were not redone


def test_repeated_inputs_are_separate_items_scored_against_their_own_labels(tmp_path):
    """A dataset may repeat an input with another label (4 of 200 WMT segments repeat a source). Each row is
    an item: it gets a result of its own, and the report counts it once per row with its own score."""
    a, b = teacher_engines()
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "answer": "6"})
    fuse = Fuse("question -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                   Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    rows = [dspy.Example(question="q1", answer="6").with_inputs("question"),
            dspy.Example(question="q0", answer="2").with_inputs("question"),
            dspy.Example(question="q1", answer="5").with_inputs("question")]  # same input, another label
    harness = Harness(fuse=fuse, metric=metric, examples=rows, ns=[4], selectors=[MajorityVote()], out_dir=tmp_path,
                      metric_name="EM", task="toy", progress=False, resamples=100, plots=False)
    report = harness.run()
    assert report.examples == 3
    assert report.get("fusion", 4).mean == pytest.approx(1 / 3)  # "6": right for row 0 only
    assert report.get("oracle", 4).mean == 1.0  # q1's candidates hold both 5 and 6
    ids = {entry["result"]["example"]: entry["result"]["score"]
           for entry in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())
           if entry["kind"] == "result" and entry["result"]["method"] == "fusion"}
    assert ids == {example_id(rows[0]): 1.0, example_id(rows[1]): 0.0, example_id(rows[0]) + "-1": 0.0}
    calls = (a.calls, b.calls, fusor.calls)
    assert harness.run().get("fusion", 4).mean == pytest.approx(1 / 3)  # resumes: no call, same report
    assert (a.calls, b.calls, fusor.calls) == calls
