from __future__ import annotations

import json
import math

import dspy
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.evaluate import EvalReport
from fusion_dspy.evaluate import Harness
from fusion_dspy.evaluate import example_id
from fusion_dspy.evaluate import example_ids
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.testing import FakeEngine
from tests.evaluate.builders import GOLD
from tests.evaluate.builders import fails_on_first_request
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
                     progress=False, resamples=100, plots=False).run()
    assert report.get("fusion", 2).mean == 0.0 and report.get("fusion", 2).errors == 1
    (fault,) = report.get("fusion", 2).faults
    assert "`fusion` N=2: 1 of 1 examples recorded a fault (1 x " in report.to_markdown()
    assert len(fault) > 0 and report.get("fusion", 2).faults[fault] == 1
    assert report.get("oracle", 2).mean == 0.0


def test_bad_arguments(tmp_path):
    harness_args = dict(fuse=Fuse("question -> answer", 1), metric=metric, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="ns must be positive"):
        Harness(examples=examples(), ns=[0], **harness_args)
    with pytest.raises(ValueError, match="examples is empty"):
        Harness(examples=[], ns=[1], **harness_args)
    for resamples in (0, 1, 99, 500.5):  # checked up front, not in report() after the whole run
        with pytest.raises(ValueError, match="resamples must be an int >= 100"):
            Harness(examples=examples(), ns=[1], resamples=resamples, **harness_args)


def test_selection_only_run_never_calls_the_fusor(tmp_path):
    a, b = teacher_engines()
    fusor = FakeEngine(name="f")
    fuse = Fuse("question -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                    Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    report = Harness(fuse=fuse, metric=metric, examples=examples(), ns=[2, 4], selectors=[MajorityVote()],
                     out_dir=tmp_path, progress=False, resamples=100, plots=False, include_fusion=False).run()
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


def test_bad_concurrency(tmp_path):
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        Harness(fuse=Fuse("question -> answer", 1), metric=metric, examples=examples(), ns=[1], out_dir=tmp_path,
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
    assert ids == dict(zip(example_ids(rows), [1.0, 0.0, 0.0], strict=True))
    assert example_ids(rows)[1] == example_id(rows[1])  # q0 is unique: its id is its inputs' id
    calls = (a.calls, b.calls, fusor.calls)
    assert harness.run().get("fusion", 4).mean == pytest.approx(1 / 3)  # resumes: no call, same report
    assert (a.calls, b.calls, fusor.calls) == calls


def test_a_non_finite_metric_score_is_a_metric_error_not_a_nan_mean(tmp_path):
    """A metric returning NaN or inf (e.g. a 0/0 ratio) is treated like a metric that raises: the row scores 0,
    is reported as a metric error naming the metric, and the journal stays standard JSON (no ``NaN``)."""
    def ratio(example, prediction, trace=None):
        if example.question == "q2":
            return float("nan") if prediction.answer == "2" else float("inf")
        return metric(example, prediction)

    harness, _ = make(tmp_path)
    harness.metric = ratio
    report = harness.run()
    for summary in report.methods:
        assert all(math.isfinite(v) for v in (summary.mean, summary.ci_low, summary.ci_high)), summary
    fusion = report.get("fusion", 4)
    assert fusion.mean == pytest.approx(1 / 3) and fusion.errors == 1  # "2": right on q0; q2's NaN scores 0
    (fault,) = fusion.faults
    assert fault.startswith("metric: ValueError") and "'ratio'" in fault and "finite" in fault
    text = (tmp_path / "results.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_repeats_of_an_input_are_told_apart_by_their_labels_so_a_reordered_resume_keeps_each_rows_results(tmp_path):
    """Two rows with one question and different references: resuming with the rows in another order must not
    hand one row's journaled results to the other (a fresh run of that order is the reference)."""
    rows = [dspy.Example(question="q0", answer="1").with_inputs("question"),  # q0's candidates: 1, 1, 2, 2
            dspy.Example(question="q0", answer="2").with_inputs("question")]

    def run(out_dir, order, **kwargs):
        a, b = teacher_engines()
        fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "answer": "1"})
        fuse = Fuse("question -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                       Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
        return Harness(fuse=fuse, metric=metric, examples=[rows[i] for i in order], ns=[4],
                       selectors=[MajorityVote()], out_dir=out_dir, progress=False, resamples=100,
                       plots=False).run(**kwargs)

    assert run(tmp_path / "resumed", [0, 1], time_budget_s=0).examples == 1  # only the first row is journaled
    resumed = run(tmp_path / "resumed", [1, 0])
    fresh = run(tmp_path / "fresh", [1, 0])
    assert _stats(resumed) == _stats(fresh)
    assert resumed.get("fusion", 4).mean == 0.5  # "1": right for the first row only


def test_example_ids_keep_unique_inputs_and_follow_the_labels_of_repeats():
    """An example whose inputs are unique keeps :func:`example_id` (old journals resume); repeats get an id
    from their labels, and fully identical rows are numbered among themselves, whatever the order."""
    def row(q, answer):
        return dspy.Example(question=q, answer=answer).with_inputs("question")

    data = [row("q0", "1"), row("q1", "6"), row("q0", "2"), row("q0", "1"), row("q2", "9")]
    ids = example_ids(data)
    assert len(set(ids)) == len(data)
    assert ids[1] == example_id(data[1]) and ids[4] == example_id(data[4])
    assert all(ids[i].startswith(example_id(data[0]) + "-") for i in (0, 2, 3))  # "<id>-<suffix>", as before
    assert ids[3] == ids[0] + "-1"  # the second identical row
    order = [4, 3, 2, 1, 0]
    by_row = dict(zip(order, example_ids([data[i] for i in order]), strict=True))
    assert by_row[2] == ids[2] and by_row[1] == ids[1] and {by_row[0], by_row[3]} == {ids[0], ids[3]}
    same = [row("q0", "1"), row("q0", "1")]  # identical rows only: numbered by position, as journals have them
    assert example_ids(same) == [example_id(same[0]), example_id(same[0]) + "-1"]


def _flaky_b_harness(out_dir, b_fails):
    """:func:`make` at N in {2, 4}, with teacher b failing (a transient fault: not stored) when ``b_fails``."""
    harness, (a, b, fusor) = make(out_dir)
    b.fail = b_fails
    harness.ns = [2, 4]
    return harness, (a, b, fusor)


def _journal(out_dir):
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


def test_a_transient_draw_failure_is_the_same_failure_for_every_method_and_is_not_asked_again(tmp_path):
    """Teacher b times out on its first request per question only. The first call's candidate set, failure
    included, is what every method of that example sees (Best-of-N at each N, fusion at the smaller N), and
    no draw is asked twice."""
    b_fails = fails_on_first_request("b")

    harness, (a, b, fusor) = _flaky_b_harness(tmp_path, b_fails)
    report = harness.run()
    assert a.calls + b.calls == 3 * 4  # one request per draw: the failed one is not asked again
    entries = _journal(tmp_path)
    answers = {e["example"]: [c["outputs"] and c["outputs"]["answer"] for c in e["candidates"]]
               for e in entries if e["kind"] == "candidates"}
    assert all(answer[1] is None for answer in answers.values())  # b's first sample failed everywhere
    bon = {(e["result"]["example"], e["result"]["n"]): e["result"]["output"]["answer"]
           for e in entries if e["kind"] == "result" and e["result"]["method"] == "bon-majority"}
    for (eid, n), answer in bon.items():  # majority over the journaled survivors (ties: the first)
        survivors = [x for x in answers[eid][:n] if x is not None]
        assert answer == max(survivors, key=survivors.count), (eid, n)
    assert report.get("single:b", 1).errors == 3


def test_a_resumed_run_replays_the_journaled_transient_failures_instead_of_asking_again(tmp_path):
    harness, _ = _flaky_b_harness(tmp_path, lambda request: request.sample("b") == 0)
    first = harness.run()
    path = tmp_path / "results.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                            if '"bon-' not in line and '"n": 2' not in line))
    again, (a, b, fusor) = _flaky_b_harness(tmp_path, False)  # b would answer now
    second = again.run()
    assert a.calls == b.calls == 0  # the journaled failures are replayed, not asked again
    assert _stats(second) == _stats(first)


@pytest.mark.parametrize("case", ["fusor fails: the selector answers", "the Fuse forces the guard"])
def test_fusion_time_includes_the_selector_calls_its_tokens_include(tmp_path, case):
    """``time_s`` and the tokens cover the same LM calls: a judge that answers for a failed fusor, or the
    judge of a guard the Fuse forces, is in both (each judge call sleeps 0.1 s; everything else is fast)."""
    from fusion_dspy.selectors.judge import LLMJudge

    a, b = teacher_engines()
    fails = case.startswith("fusor fails")
    fusor = FakeEngine(name="f", fail=fails, responder=lambda r: {"comparison": "c", "answer": "2"})
    judge_engine = FakeEngine(name="j", responder=lambda r: {"reasoning": "ok", "score": 7}, delay=0.1)
    judge = LLMJudge(lm=judge_engine.lm(), num_threads=1)
    fuse = Fuse("question -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                   Teacher(b.lm(), name="b", samples=2)],
                fusor=fusor.lm(), selector=judge, guard=None if fails else True)
    report = Harness(fuse=fuse, metric=metric, examples=examples()[:1], ns=[4], selectors=[MajorityVote()],
                     out_dir=tmp_path, progress=False, resamples=100, plots=False).run()
    fusion = report.get("fusion", 4)
    assert fusion.paths == ({"select": 1} if fails else {"fuse": 1})  # the guard kept the fused "2"
    assert judge_engine.calls >= 1
    assert fusion.time_s >= 0.1 * judge_engine.calls  # the judge ran inside the fusion call only


class _Broken(MajorityVote):
    name = "broken"

    def select(self, signature, inputs, candidates):
        raise RuntimeError("the judge's endpoint is down")


def test_a_failing_selector_is_a_reported_fault_not_the_end_of_the_run(tmp_path):
    a, b = teacher_engines()
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "answer": "2"})
    fuse = Fuse("question -> answer", 2, teachers=[Teacher(a.lm(), name="a"), Teacher(b.lm(), name="b")],
                fusor=fusor.lm())
    report = Harness(fuse=fuse, metric=metric, examples=examples(), ns=[2], selectors=[MajorityVote(), _Broken()],
                     out_dir=tmp_path, progress=False, resamples=100, plots=False).run()
    broken = report.get("bon-broken", 2)
    assert broken.errors == 3 and broken.mean == 0.0  # every example ran, each failure recorded
    assert any("selector 'broken' failed: RuntimeError" in fault for fault in broken.faults)
    assert report.get("bon-majority", 2).errors == 0 and report.get("fusion", 2).errors == 0
