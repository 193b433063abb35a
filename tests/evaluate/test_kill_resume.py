"""kill -9 a concurrent evaluation at random moments; the resumed report equals a clean run's."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import sys

    import dspy

    from fusion_dspy import Fuse, Teacher
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.testing import FakeEngine

    a = FakeEngine(name="a", delay=0.02, responder=lambda r: {"answer": str(int(r.inputs["question"]) % 3)})
    b = FakeEngine(name="b", delay=0.02, responder=lambda r: {"answer": str(r.sample("b") % 2)})
    fusor = FakeEngine(name="f", delay=0.04, responder=lambda r: {"comparison": "c", "answer": "1"})
    fuse = Fuse("question -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                    Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    examples = [dspy.Example(question=str(i), answer=str(i % 2)).with_inputs("question") for i in range(40)]
    metric = lambda example, prediction, trace=None: float(str(prediction.answer) == example.answer)
    report = Harness(fuse=fuse, metric=metric, examples=examples, ns=[2, 4], out_dir=sys.argv[1], progress=False,
                     resamples=100, plots=False, concurrency=int(sys.argv[2])).run()
    print(report.model_dump_json())
    """
)


def start(script, out, concurrency):
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_CACHEDIR": str(out.parent / "dspy-cache")}
    return subprocess.Popen([sys.executable, str(script), str(out), str(concurrency)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def results(out):
    path = out / "results.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line)["result"] for line in lines if '"kind": "result"' in line and line.endswith("}")]


def test_kills_of_a_concurrent_evaluation_lose_and_duplicate_no_result(tmp_path):
    script = tmp_path / "run_eval.py"
    script.write_text(SCRIPT)
    clean = start(script, tmp_path / "clean", 1)
    stdout, stderr = clean.communicate(timeout=300)
    assert clean.returncode == 0, stderr
    expected = json.loads(stdout.splitlines()[-1])

    rng = random.Random(12)
    out = tmp_path / "killed"
    for _ in range(3):
        before = len(results(out))
        process = start(script, out, 6)
        deadline = time.monotonic() + 120
        while len(results(out)) < before + rng.randint(5, 25) and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        assert process.poll() is None, "finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    process = start(script, out, 6)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    keys = collections.Counter((r["example"], r["method"], r["n"]) for r in results(out))
    assert max(keys.values()) == 1  # no result written twice
    assert set(keys) == {(r["example"], r["method"], r["n"]) for r in results(tmp_path / "clean")}  # none lost
    got = json.loads(stdout.splitlines()[-1])
    fields = ("method", "n", "count", "mean", "ci_low", "ci_high", "vs_baseline", "input_tokens", "errors")
    # The same statistics as the clean, sequential run (wall times aside).
    assert [{k: m[k] for k in fields} for m in got["methods"]] == [{k: m[k] for k in fields}
                                                                   for m in expected["methods"]]
