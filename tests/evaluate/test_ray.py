"""The harness on a local Ray runtime (skipped without ray): the same journal and report as a local run."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

import dspy  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy.evaluate import Harness  # noqa: E402
from fusion_dspy.evaluate.ray import run_harness_ray  # noqa: E402

ANSWERS = {"q0": ["1", "1", "2", "2"], "q1": ["5", "6", "6", "6"], "q2": ["9", "8", "7", "9"]}


def build_harness(out_dir, count=9):
    from fusion_dspy.selectors import MajorityVote
    from fusion_dspy.testing import FakeEngine

    def responder(name):
        def respond(request):
            position = {"a": [0, 2], "b": [1, 3]}[name][request.seed]
            return {"answer": ANSWERS[request.inputs["question"]][position]}
        return respond

    a, b = FakeEngine(name="a", responder=responder("a")), FakeEngine(name="b", responder=responder("b"))
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "answer": "6"})
    fuse = Fuse("question, tag -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                         Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    gold = {"q0": "2", "q1": "6", "q2": "9"}
    examples = [dspy.Example(question=f"q{i % 3}", answer=gold[f"q{i % 3}"], tag=i).with_inputs("question", "tag")
                for i in range(count)]
    return Harness(fuse=fuse, metric=lambda e, p, trace=None: float(str(p.answer) == e.answer), examples=examples,
                   ns=[2, 4], selectors=[MajorityVote(), "mbr"], out_dir=out_dir, progress=False, resamples=200,
                   plots=False)


def stats(report):
    return [(m.method, m.n, m.count, m.mean, m.ci_low, m.ci_high, m.vs_baseline, m.input_tokens)
            for m in report.methods]


def test_ray_harness_matches_a_local_run_and_resumes_one(tmp_path, runtime):
    expected = build_harness(tmp_path / "local").run()
    assert stats(run_harness_ray(build_harness, tmp_path / "ray", actors=2, concurrency=3)) == stats(expected)
    # A local run stopped early, then finished on Ray: nothing redone, the same report.
    build_harness(tmp_path / "mixed").run(time_budget_s=0.0)
    resumed = run_harness_ray(build_harness, tmp_path / "mixed", actors=1, concurrency=4)
    assert stats(resumed) == stats(expected)
    lines = (tmp_path / "mixed" / "results.jsonl").read_text().splitlines()
    keys = [line for line in lines if '"kind": "result"' in line]
    assert len(keys) == len((tmp_path / "local" / "results.jsonl").read_text().split('"kind": "result"')) - 1
