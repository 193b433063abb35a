"""The Ray Data path on a local runtime (skipped without ray): same layout, resumes like a local run."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy.synth import make_prompts  # noqa: E402
from fusion_dspy.synth import read_records  # noqa: E402
from fusion_dspy.synth import synthesize  # noqa: E402
from fusion_dspy.synth.ray import RayOptions  # noqa: E402
from fusion_dspy.synth.ray import synthesize_ray  # noqa: E402


def build_fuse():
    from fusion_dspy.testing import FakeEngine

    a = FakeEngine(name="a", delay=0.01, responder=lambda r: {"response": "a " + r.inputs["prompt"]})
    b = FakeEngine(name="b", delay=0.01, responder=lambda r: {"response": f"b{r.seed} " + r.inputs["prompt"]})
    fusor = FakeEngine(name="f", delay=0.01, responder=lambda r: {"comparison": "c",
                                                                  "response": "fused " + r.inputs["prompt"]})
    return Fuse("prompt -> response", 3, teachers=[Teacher(a.lm(), name="a"), Teacher(b.lm(), name="b", samples=2)],
                fusor=fusor.lm())


def failing():
    fuse = build_fuse()
    fuse.configure(min_candidates=3)
    fuse.teachers[0].lm.engine.fail = lambda r: r.inputs["prompt"] == "p2"
    return fuse


def prompts(count):
    return make_prompts([{"prompt": f"p{i}"} for i in range(count)], ["prompt"])


KEEP = ("id", "index", "prompt", "fused_output", "selected_output", "calls")


def rows(out):
    return [{k: r[k] for k in KEEP} for r in read_records(out)]


def test_ray_run_matches_a_local_run_and_each_resumes_the_other(tmp_path, runtime):
    import datasets

    synthesize(build_fuse(), prompts(16), tmp_path / "local", also_select="mbr", shard_size=4, progress=False)
    # Ray does the first half, a local run resumes it; then Ray resumes a local half-run.
    first = synthesize_ray(build_fuse, prompts(8), tmp_path / "mixed", also_select="mbr", shard_size=4,
                           ray=RayOptions(actors=2, concurrency=3), progress=False)
    assert (first.generated, first.complete) == (8, True)
    second = synthesize(build_fuse(), prompts(16), tmp_path / "mixed", also_select="mbr", shard_size=4,
                        progress=False)
    assert (second.resumed, second.generated) == (8, 8)
    assert rows(tmp_path / "mixed") == rows(tmp_path / "local")

    synthesize(build_fuse(), prompts(5), tmp_path / "other", also_select="mbr", shard_size=4, progress=False)
    third = synthesize_ray(build_fuse, prompts(16), tmp_path / "other", also_select="mbr", shard_size=4,
                           ray=RayOptions(actors=2, concurrency=4), progress=False)
    assert (third.resumed, third.generated, third.complete) == (5, 11, True)
    assert rows(tmp_path / "other") == rows(tmp_path / "local")
    exported = datasets.load_from_disk(str(tmp_path / "other" / "dataset"))
    assert exported.column_names == datasets.load_from_disk(str(tmp_path / "local" / "dataset")).column_names
    assert exported["prompt"] == [f"p{i}" for i in range(16)]


def test_ray_failed_rows_use_the_same_journal(tmp_path, runtime):
    result = synthesize_ray(failing, prompts(6), tmp_path, ray=RayOptions(actors=1, concurrency=2), max_attempts=2,
                            progress=False)
    assert result.complete and result.failed == [prompts(6)[2].id] and result.failed_total == 1
    fixed = failing()
    fixed.teachers[0].lm.engine.fail = False
    again = synthesize(fixed, prompts(6), tmp_path, progress=False, retry_failed=True)
    assert (again.generated, again.failed_total) == (1, 0)


def test_cli_synth_on_ray(tmp_path, runtime, capsys):
    import json

    from fusion_dspy.cli import main

    pool = {"teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b", "samples": 2}],
            "fusors": [{"name": "f", "model": "fake/f"}]}
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say {i}"}) + "\n" for i in range(6)))
    argv = ["synth", "--prompts", str(tmp_path / "prompts.jsonl"), "--config", str(tmp_path / "pool.json"),
            "--out", str(tmp_path / "ds"), "--no-progress", "--ray", "local", "--actors", "1", "--concurrency", "3"]
    assert main(argv) == 0
    assert "6 generated, 0 resumed, 0 failed of 6 prompts" in capsys.readouterr().out
    assert main(argv[:-6] + ["--no-progress"]) == 0  # a local run resumes the Ray run
    assert "0 generated, 6 resumed" in capsys.readouterr().out
