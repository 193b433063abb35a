"""The harness on a local Ray runtime (skipped without ray): the same journal and report as a local run."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from fusion_dspy.evaluate.ray import RayOptions  # noqa: E402
from fusion_dspy.evaluate.ray import run_harness_ray  # noqa: E402
from tests.evaluate.builders import ray_harness as build_harness  # noqa: E402


def stats(report):
    return [(m.method, m.n, m.count, m.mean, m.ci_low, m.ci_high, m.vs_baseline, m.input_tokens)
            for m in report.methods]


def test_ray_harness_matches_a_local_run_and_resumes_one(tmp_path, runtime):
    expected = build_harness(tmp_path / "local").run()
    on_ray = run_harness_ray(build_harness, tmp_path / "ray", ray=RayOptions(actors=2, concurrency=3))
    assert stats(on_ray) == stats(expected)
    # A local run stopped early, then finished on Ray: nothing redone, the same report.
    build_harness(tmp_path / "mixed").run(time_budget_s=0.0)
    resumed = run_harness_ray(build_harness, tmp_path / "mixed", ray=RayOptions(actors=1, concurrency=4))
    assert stats(resumed) == stats(expected)
    lines = (tmp_path / "mixed" / "results.jsonl").read_text().splitlines()
    keys = [line for line in lines if '"kind": "result"' in line]
    assert len(keys) == len((tmp_path / "local" / "results.jsonl").read_text().split('"kind": "result"')) - 1
