"""benchmarks/fusion_quality.py: its CLI wires the harness's guard and strategies, and --prompt-cache.

The guard and strategy methods themselves are tested in tests/evaluate/test_harness_variants.py; here
the ``math`` part runs end to end with fake local models (``local.lm`` and the data loader patched).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dspy
import pytest

from fusion_dspy.testing import FakeEngine
from tests.helpers import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fusion_quality.py"


def _bench():
    return load_script(BENCH, "fusion_quality")


@pytest.fixture
def fake_local(monkeypatch):
    """``local.lm`` answers with fake engines (recording each call's options); three GSM8K-like problems."""
    import fusion_dspy.programs.math

    import fusion_dspy.local

    answers = {0: 4.0, 1: 5.0, 2: 4.0}  # the teacher's samples: the majority is right
    made: list[tuple[str, dict]] = []
    engines: dict[str, FakeEngine] = {
        "qwen2.5-0.5b": FakeEngine(name="t", responder=lambda r: {
            "reasoning": "r", "answer": answers[r.sample("qwen2.5-0.5b") % 3]}),
        # The paper prompt writes a wrong 7; shown the vote tally, the fusor takes the majority.
        "qwen2.5-1.5b": FakeEngine(name="f", responder=lambda r: {
            "comparison": "c", "reasoning": "r", "answer": 4.0 if "Tally" in r.inputs["candidates"] else 7.0}),
    }

    def lm(name, **options):
        made.append((name, options))
        return engines[name].lm()

    problems = [dspy.Example(question=f"q{i}", answer="4").with_inputs("question") for i in range(3)]
    monkeypatch.setattr(fusion_dspy.local, "lm", lm)
    monkeypatch.setattr(fusion_dspy.programs.math, "load_math", lambda data=None, limit=None: problems[:limit])
    return made, engines


def _main(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["fusion_quality.py", *argv])
    assert _bench().main() == 0
    return capsys.readouterr().out


def test_math_part_reports_guard_and_strategies_and_resumes(tmp_path, monkeypatch, capsys, fake_local):
    made, engines = fake_local
    argv = ("math", "--problems", "3", "--samples", "3", "--strategies", "vote", "--out", str(tmp_path))
    out = _main(monkeypatch, capsys, *argv)
    for method in ("fusion+guard", "fusion:vote", "fusion:vote+guard"):
        assert f"| {method} | 3 |" in out
    # The guard replaces the lone wrong fused 7 by the majority's 4, and keeps the voted fusion.
    assert "`fusion+guard` N=3: kept the fused answer on 0 of 3 examples (0%)" in out
    assert "`fusion:vote+guard` N=3: kept the fused answer on 3 of 3 examples (100%)" in out
    report = json.loads((tmp_path / "report.json").read_text())
    means = {m["method"]: m["mean"] for m in report["methods"]}
    assert means["fusion"] == 0.0 and means["fusion+guard"] == means["fusion:vote"] == 1.0
    calls = engines["qwen2.5-0.5b"].calls, engines["qwen2.5-1.5b"].calls
    assert calls == (9, 6)  # one draw of 3 per problem; two fusions (paper, vote) per problem
    assert all("prompt_cache" not in options for _, options in made)  # off unless asked
    _main(monkeypatch, capsys, *argv)  # the same command again resumes: nothing left to run
    assert (engines["qwen2.5-0.5b"].calls, engines["qwen2.5-1.5b"].calls) == calls


def test_prompt_cache_flag_reaches_every_local_model(tmp_path, monkeypatch, capsys, fake_local):
    made, _ = fake_local
    _main(monkeypatch, capsys, "math", "--problems", "1", "--samples", "3", "--prompt-cache", "--threads", "1",
          "--out", str(tmp_path))
    assert sorted(name for name, _ in made) == ["qwen2.5-0.5b", "qwen2.5-1.5b"]
    assert all(options["prompt_cache"] is True and options["n_threads"] == 1 for _, options in made)
    assert all("n_ctx" not in options for _, options in made)  # the engine's default unless asked


def test_n_ctx_flag_reaches_every_local_model(tmp_path, monkeypatch, capsys, fake_local):
    made, _ = fake_local
    _main(monkeypatch, capsys, "math", "--problems", "1", "--samples", "3", "--n-ctx", "12288", "--out", str(tmp_path))
    assert sorted(name for name, _ in made) == ["qwen2.5-0.5b", "qwen2.5-1.5b"]
    assert all(options["n_ctx"] == 12288 for _, options in made)


def test_unknown_strategy_is_a_cli_error(tmp_path, monkeypatch, capsys, fake_local):
    argv = ["fusion_quality.py", "math", "--strategies", "vote,fancy", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"--strategies: unknown \['fancy'\]"):
        _bench().main()


def test_exclude_run_holds_out_exactly_the_segments_another_run_journaled(tmp_path):
    from fusion_dspy.evaluate import example_id

    examples = [dspy.Example(source=f"s{i}", target_language="German").with_inputs("source", "target_language")
                for i in range(5)]
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"kind": "header"}, {"kind": "candidates", "example": example_id(examples[1]), "n": 5, "candidates": []},
             {"kind": "candidates", "example": example_id(examples[3]) + "-1", "n": 5, "candidates": []}]
    # That run is still going (or was killed): its journal ends in half a line, which is neither read nor cut.
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"kind": "candidates", "example": "'
    (run / "results.jsonl").write_text(text)
    held = _bench()._held_out(examples, str(run))
    assert (run / "results.jsonl").read_text() == text
    assert [e.source for e in held] == ["s0", "s2", "s4"]
    with pytest.raises(SystemExit, match="--exclude-run: .* does not exist"):
        _bench()._held_out(examples, str(tmp_path / "nothing"))


def test_guard_ties_rescores_a_math_run_under_each_tie_rule(tmp_path, monkeypatch, capsys, fake_local):
    """benchmarks/guard_ties.py on a journal where the three draws all differ (4, 5, 6; the reference is 4): the
    paper fusor's 7, which no draw gave, ties every answer at one vote, so today's rule keeps it (wrong); the
    strict and 'supported' rules return majority's pick, the first draw's 4. The vote fusor's 4 is kept by all."""
    _, engines = fake_local
    engines["qwen2.5-0.5b"].responder = lambda r: {"reasoning": "r", "answer": 4.0 + r.sample("qwen2.5-0.5b")}
    _main(monkeypatch, capsys, "math", "--problems", "3", "--samples", "3", "--strategies", "vote",
          "--out", str(tmp_path))
    script = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "guard_ties.py", "guard_ties")
    monkeypatch.setattr(sys, "argv", ["guard_ties.py", str(tmp_path / "results.jsonl"), "--problems", "3",
                                      "--held-out-from", "2"])
    assert script.main() == 0
    out = capsys.readouterr().out
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line.split("|")[4].strip()
            for line in out.splitlines() if line.startswith("| `")}
    assert rows[("`fusion` in-sample (1-1)", "today")] == "0.00"
    assert rows[("`fusion` held out (2-3)", "today")] == "0.00"
    for rule in ("strict", "supported"):
        assert rows[("`fusion` held out (2-3)", rule)] == "1.00"
    assert all(rows[("`fusion:vote` held out (2-3)", rule)] == "1.00" for rule in ("today", "supported"))
    assert "matches the journaled `fusion+guard` score on 3 of 3 examples" in out
    # The registered decision, made by the script: 'supported' lifts plain fusion's lower bound, not the vote's.
    assert "registered test, `fusion`, 2 held-out examples" in out
    verdicts = [line for line in out.splitlines() if "registered test" in line]
    assert verdicts[0].endswith(": adopt 'supported'.") and verdicts[1].endswith(": do not adopt 'supported'.")
