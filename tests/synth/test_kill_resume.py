"""kill -9 a real synth process mid-run, restart it, and check nothing is lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import datasets

PROMPTS = 30

SCRIPT = textwrap.dedent(
    """
    import sys

    from fusion_dspy import Fuse, Teacher
    from fusion_dspy.synth import make_prompts, synthesize
    from fusion_dspy.testing import FakeEngine

    a = FakeEngine(name="a", delay=0.02, responder=lambda r: {"response": "a " + r.inputs["prompt"]})
    b = FakeEngine(name="b", delay=0.02, responder=lambda r: {"response": f"b{r.seed} " + r.inputs["prompt"]})
    fusor = FakeEngine(name="f", delay=0.05,
                       responder=lambda r: {"comparison": "c", "response": "fused " + r.inputs["prompt"]})
    fuse = Fuse("prompt -> response", 3, teachers=[Teacher(a.lm(), name="a"), Teacher(b.lm(), name="b", samples=2)],
                fusor=fusor.lm(), guard=False)  # the fusor's answers are the records checked below
    prompts = make_prompts([{"prompt": f"p{i}"} for i in range(PROMPTS)], ["prompt"])
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    result = synthesize(fuse, prompts, sys.argv[1], also_select="mbr", shard_size=4, progress=False,
                        concurrency=concurrency)
    print("TEACHER_CALLS", a.calls + b.calls, "GENERATED", result.generated, "RESUMED", result.resumed)
    """
).replace("PROMPTS", str(PROMPTS))


def shard_lines(out):
    shards = out / "shards"
    if not shards.exists():
        return 0
    return sum(path.read_text().count("\n") for path in shards.glob("*.jsonl"))


def start(script, out, concurrency=1):
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_CACHEDIR": str(out.parent / "dspy-cache")}
    return subprocess.Popen([sys.executable, str(script), str(out), str(concurrency)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    script = tmp_path / "run_synth.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ds"
    process = start(script, out)
    deadline = time.monotonic() + 120
    while shard_lines(out) < 8:
        assert process.poll() is None, f"finished before it could be killed: {process.communicate()}"
        assert time.monotonic() < deadline, "no progress within 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    written = shard_lines(out)
    assert 8 <= written < PROMPTS and not (out / "dataset").exists()
    # Simulate the worst moment of a kill as well: half a record at the end of the newest shard.
    newest = max((out / "shards").glob("*.jsonl"))
    with newest.open("a") as handle:
        handle.write('{"id": "torn", "index": 3, "prompt": "p')

    process = start(script, out)
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    stats = stdout.split()
    resumed = int(stats[stats.index("RESUMED") + 1])
    generated = int(stats[stats.index("GENERATED") + 1])
    assert resumed == written and resumed + generated == PROMPTS
    # Teachers were called only for prompts not finished before the kill (the one in flight may have
    # its draws stored already), 3 draws each.
    assert int(stats[stats.index("TEACHER_CALLS") + 1]) <= 3 * generated

    shards = sorted((out / "shards").glob("*.jsonl"))
    records = [json.loads(line) for path in shards for line in path.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == PROMPTS  # nothing duplicated, nothing lost, no torn line left
    dataset = datasets.load_from_disk(str(out / "dataset"))
    assert dataset["prompt"] == [f"p{i}" for i in range(PROMPTS)]
    assert dataset["fused_output"] == [f"fused p{i}" for i in range(PROMPTS)]
    assert all(row["selected_output"].endswith(row["prompt"]) for row in dataset)


def records(out):
    lines = [line for path in sorted((out / "shards").glob("*.jsonl")) for line in path.read_text().splitlines()]
    return [json.loads(line) for line in lines]


def test_five_kills_at_random_moments_of_a_concurrent_run_lose_and_duplicate_nothing(tmp_path):
    import random

    prompts = 60
    script = tmp_path / "run_synth.py"
    script.write_text(SCRIPT.replace(f"range({PROMPTS})", f"range({prompts})"))
    clean = tmp_path / "clean"
    process = start(script, clean, concurrency=1)
    assert process.wait(timeout=300) == 0, process.communicate()

    rng = random.Random(12)
    out = tmp_path / "killed"
    kills = 0
    while kills < 5:
        before = shard_lines(out)
        process = start(script, out, concurrency=8)
        target = before + rng.randint(1, 6)
        deadline = time.monotonic() + 120
        while shard_lines(out) < target and process.poll() is None:
            assert time.monotonic() < deadline, "no progress within 120 s"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.08))  # a random moment: often with rows half done
        if process.poll() is not None:
            break  # finished before this kill: the remaining kills have nothing left to hit
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills += 1
        written = records(out)
        assert len({r["id"] for r in written}) == len(written)  # never a duplicate, even mid-run
    assert kills == 5, "the run finished before it could be killed 5 times (make it longer)"

    before = len(records(out))
    process = start(script, out, concurrency=8)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    stats = stdout.split()
    assert int(stats[stats.index("RESUMED") + 1]) == before  # finished rows were not recomputed
    got, expected = records(out), records(clean)
    assert len(got) == len({r["id"] for r in got}) == prompts  # 0 lost, 0 duplicated
    keep = ("id", "index", "prompt", "fused_output", "selected_output")
    by_index = sorted(({k: r[k] for k in keep} for r in got), key=lambda r: r["index"])
    assert by_index == sorted(({k: r[k] for k in keep} for r in expected), key=lambda r: r["index"])
    assert datasets.load_from_disk(str(out / "dataset")).num_rows == prompts
