"""benchmarks/fusion_quality.py: the guarded and extra-strategy methods on the harness's candidates."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import dspy

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.testing import FakeEngine

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fusion_quality.py"


def _bench():
    spec = importlib.util.spec_from_file_location("fusion_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exact(example, prediction, trace=None):
    return float(str(prediction.answer) == example.answer)


def test_guard_and_strategies_run_on_the_same_candidates_and_resume(tmp_path):
    # Teachers: the right answer "4" twice, a wrong "5" once. The fusor writes "7" (wrong, alone) for
    # the paper prompt and "4" when it is shown the vote tally.
    answers = {0: "4", 1: "5", 2: "4"}
    teacher = FakeEngine(name="t", responder=lambda r: {"answer": answers[r.seed % 3]})
    fusor = FakeEngine(name="f", responder=lambda r: {
        "comparison": "c", "answer": "4" if "Tally" in r.inputs["candidates"] else "7"})
    fuse = Fuse("question -> answer", 3, teachers=[Teacher(teacher.lm(), name="t", samples=3, temperature=0.8)],
                fusor=fusor.lm(), max_threads=1)
    examples = [dspy.Example(question=f"q{i}", answer="4").with_inputs("question") for i in range(3)]
    bench = _bench()

    def run():
        harness = bench.guarded_harness(fuse=fuse, metric=_exact, examples=examples, ns=[3],
                                        selectors=[MajorityVote()], out_dir=tmp_path, progress=False, plots=False,
                                        strategies=["vote"])
        return harness.run()

    report = run()
    scores = {m.method: m.mean for m in report.methods}
    assert scores["fusion"] == 0.0 and scores["fusion:vote"] == 1.0
    # The guard replaces the lone wrong fused "7" by the majority's "4", and keeps the voted fusion.
    assert scores["fusion+guard"] == 1.0 and scores["fusion:vote+guard"] == 1.0
    guarded = report.get("fusion+guard", 3)
    assert guarded.paths == {"select": 3} and report.get("fusion:vote+guard", 3).paths == {"fuse": 3}
    # The guard costs no LM call: same tokens as the fusion it guards.
    assert guarded.total_tokens == report.get("fusion", 3).total_tokens > 0
    assert "kept the fused answer on 0 of 3" in bench.guard_summary(report)
    calls = teacher.calls, fusor.calls
    assert calls == (9, 6)  # one draw of 3 per example; two fusions (paper, vote) per example
    # Resuming runs nothing again, and every method has one result per example.
    run()
    assert (teacher.calls, fusor.calls) == calls
    methods = [json.loads(line)["result"]["method"] for line in (tmp_path / "results.jsonl").read_text().splitlines()
               if '"kind": "result"' in line]
    assert methods.count("fusion:vote+guard") == 3 and methods.count("fusion+guard") == 3
    assert fuse.prompt.strategy == "paper"  # the harness restored the Fuse's own prompt
