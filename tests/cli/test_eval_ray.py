"""``fusion-dspy eval --ray ADDRESS --actors N`` on a local Ray runtime (skipped without ray)."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")

from fusion_dspy.cli import main  # noqa: E402
from fusion_dspy.evaluate import EvalReport  # noqa: E402

POOL = {
    "teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b", "samples": 2}],
    "fusors": [{"name": "f", "model": "fake/f"}],
}


def stats(report: EvalReport) -> list[tuple]:
    return [(m.method, m.n, m.count, m.mean, m.ci_low, m.ci_high, m.vs_baseline) for m in report.methods]


def results(out) -> int:
    return sum('"kind": "result"' in line for line in (out / "results.jsonl").read_text().splitlines())


def test_eval_on_ray_gives_the_local_report_and_resumes_like_a_local_run(tmp_path, runtime, capsys, monkeypatch):
    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    (tmp_path / "gsm.jsonl").write_text("".join(
        json.dumps({"question": f"What is {i}+1?", "answer": f"x\n#### {i + 1}"}) + "\n" for i in range(6)))
    monkeypatch.chdir(tmp_path)  # relative --data / --config: the actors must still find them
    base = ["eval", "--task", "math", "--data", "gsm.jsonl", "--config", "pool.json", "--n", "1,3", "--no-progress"]
    assert main([*base, "--out", "local"]) == 0
    assert main([*base, "--out", "on-ray", "--ray", "local", "--actors", "1", "--concurrency", "2"]) == 0
    assert "| fusion | 3 |" in capsys.readouterr().out
    local = EvalReport.model_validate_json((tmp_path / "local" / "report.json").read_text())
    on_ray = EvalReport.model_validate_json((tmp_path / "on-ray" / "report.json").read_text())
    assert stats(on_ray) == stats(local) and on_ray.examples == 6
    written = results(tmp_path / "on-ray")
    assert written == results(tmp_path / "local") > 0
    assert main([*base, "--out", "on-ray"]) == 0  # a local run resumes the Ray run: nothing redone
    assert results(tmp_path / "on-ray") == written
    capsys.readouterr()


def test_eval_on_ray_names_a_bad_actor_count(tmp_path, capsys):
    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    (tmp_path / "gsm.jsonl").write_text(json.dumps({"question": "What is 1+1?", "answer": "x\n#### 2"}) + "\n")
    argv = ["eval", "--task", "math", "--data", str(tmp_path / "gsm.jsonl"), "--config", str(tmp_path / "pool.json"),
            "--out", str(tmp_path / "out"), "--no-progress", "--ray", "local", "--actors", "0"]
    assert main(argv) == 2
    assert "actors must be an int >= 1" in capsys.readouterr().err
