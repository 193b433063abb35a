from __future__ import annotations

import json

import pytest
from sacrebleu.metrics import CHRF

from fusion_dspy.cli import main
from fusion_dspy.evaluate import EvalReport

POOL = {
    "teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b", "samples": 2}],
    "fusors": [{"name": "f", "model": "fake/f"}],
}


def math_eval_argv(tmp_path, *, problems: int, n: str, out) -> list[str]:
    """``fusion-dspy eval`` arguments for a math task on ``problems`` GSM8K-style rows and the fake POOL."""
    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": f"x\n#### {i + 1}"}) + "\n"
                            for i in range(problems)))
    return ["eval", "--task", "math", "--data", str(data), "--config", str(tmp_path / "pool.json"), "--n", n,
            "--out", str(out), "--no-progress"]


def test_eval_math_with_a_pool_config(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(math_eval_argv(tmp_path, problems=3, n="1,3", out=out)) == 0
    printed = capsys.readouterr().out
    assert "| bon-majority | 3 |" in printed and "| fusion | 3 |" in printed
    report = EvalReport.model_validate_json((out / "report.json").read_text())
    assert report.task == "math" and report.examples == 3 and report.baseline == "bon-majority"
    assert {m.method for m in report.methods} >= {"single:a", "single:b", "random", "oracle", "bon-mbr"}


def test_eval_translate_with_recorded_systems(tmp_path, capsys):
    root = tmp_path / "en-de"
    (root / "system-outputs").mkdir(parents=True)
    (root / "source.txt").write_text("CANARY GUID 1\nGood morning.\nThank you.\n")
    (root / "reference.refA.txt").write_text("CANARY\nGuten Morgen.\nDanke.\n")
    (root / "system-outputs" / "S1.txt").write_text("c\nGuten Morgen!\nDanke schön.\n")
    (root / "system-outputs" / "S2.txt").write_text("c\nMorgen.\nDanke.\n")
    out = tmp_path / "out"
    argv = ["eval", "--task", "translate", "--data", str(root), "--recorded", "S1,S2", "--fusor", "fake/f",
            "--selectors", "mbr", "--n", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = EvalReport.model_validate_json((out / "report.json").read_text())
    oracle, single = report.get("oracle", 2), report.get("single:S2", 1)
    expected = (CHRF().sentence_score("Morgen.", ["Guten Morgen."]).score + 100.0) / 2
    assert single.mean == pytest.approx(expected) and oracle.mean >= single.mean
    assert oracle.corpus is not None and report.get("fusion", 2).input_tokens > 0
    assert report.get("single:S1", 1).input_tokens == 0  # replayed outputs cost nothing
    capsys.readouterr()


def test_eval_guard_and_strategies_flags_add_methods(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*math_eval_argv(tmp_path, problems=2, n="3", out=out), "--guard", "--strategies", "vote"]) == 0
    printed = capsys.readouterr().out
    assert "`fusion+guard` N=3: kept the fused answer on" in printed
    methods = {m.method for m in EvalReport.model_validate_json((out / "report.json").read_text()).methods}
    assert {"fusion", "fusion+guard", "fusion:vote", "fusion:vote+guard"} <= methods
    assert main([*math_eval_argv(tmp_path, problems=2, n="3", out=tmp_path / "bad"), "--strategies", "nope"]) == 2
    assert "strategies" in capsys.readouterr().err


def test_eval_needs_teachers_and_names_unknown_systems(tmp_path, capsys):
    assert main(["eval", "--task", "math", "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "--config pool.toml, or --recorded" in capsys.readouterr().err
    assert main(["eval", "--task", "nope", "--config", "x.toml"]) == 2
    assert "Unknown task 'nope'" in capsys.readouterr().err


def test_eval_with_a_named_pool(tmp_path, capsys):
    (tmp_path / "pool.json").write_text(json.dumps({**POOL, "pools": {"only-b": ["b"]}}))
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": "What is 1+1?", "answer": "x\n#### 2"}) + "\n")
    out = tmp_path / "out"
    argv = ["eval", "--task", "math", "--data", str(data), "--config", str(tmp_path / "pool.json"), "--pool", "only-b",
            "--n", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = EvalReport.model_validate_json((out / "report.json").read_text())
    assert {m.method for m in report.methods if m.method.startswith("single:")} == {"single:b"}


def test_eval_concurrency_flag_gives_the_same_report(tmp_path, capsys):
    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": f"x\n#### {i + 1}"}) + "\n"
                            for i in range(8)))
    reports = []
    for k in ("1", "4"):
        out = tmp_path / f"out-{k}"
        argv = ["eval", "--task", "math", "--data", str(data), "--config", str(tmp_path / "pool.json"), "--n", "1,3",
                "--out", str(out), "--no-progress", "--concurrency", k]
        assert main(argv) == 0
        reports.append(EvalReport.model_validate_json((out / "report.json").read_text()))
    capsys.readouterr()
    strip = [[(m.method, m.n, m.count, m.mean, m.ci_low, m.ci_high, m.vs_baseline) for m in r.methods] for r in reports]
    assert strip[0] == strip[1] and reports[1].examples == 8
