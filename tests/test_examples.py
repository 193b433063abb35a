"""The examples run against the public API: each one end to end, with fake engines for the models.

The bundled models are swapped for :class:`~fusion_dspy.testing.FakeEngine` (the examples only reach
them through ``fusion_dspy.local.lm``), so these tests check the examples' code, not model quality.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fusion_dspy import local
from fusion_dspy.testing import FakeEngine
from tests.helpers import load_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _answer(request):
    """A teacher or fusor that solves the examples' arithmetic (and says Canberra otherwise)."""
    question = request.inputs.get("question", "")
    numbers = [int(n) for n in re.findall(r"\d+", question)]
    answer = "Canberra"
    if "buys" in question or "more" in question:
        answer = str(sum(numbers))
    elif "spent" in question or "gives away" in question:
        answer = str(numbers[0] - numbers[1])
    elif len(numbers) == 2:
        answer = str(numbers[0] * numbers[1])
    return {"answer": answer, "topic": "geography", "comparison": "they agree"}


@pytest.fixture
def fake_local(monkeypatch):
    engines: dict[str, FakeEngine] = {}

    def fake_lm(name, **settings):
        settings = {k: v for k, v in settings.items() if k in ("cache", "max_tokens", "temperature")}
        engine = engines.setdefault(name, FakeEngine(name=name, responder=_answer))
        return engine.lm(**settings)

    monkeypatch.setattr(local, "lm", fake_lm)
    return engines


def _run(name: str, monkeypatch, *argv: str) -> None:
    module = load_script(EXAMPLES / f"{name}.py", f"example_{name}")
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    module.main()


def test_quickstart(fake_local, monkeypatch, capsys):
    _run("quickstart", monkeypatch, "What is the capital of Australia?")
    out = capsys.readouterr().out
    assert "fused answer: Canberra" in out and "candidate #3 from smol" in out and "path=fuse" in out
    assert sum(e.calls for e in fake_local.values()) == 5  # four teacher draws and one fusor call


def test_nested_pipeline(fake_local, monkeypatch, capsys):
    _run("nested_pipeline", monkeypatch)
    out = capsys.readouterr().out
    assert "fuse.generate" in out and "fuse.fusor" in out  # DSPy optimizers see both predictors
    assert "restored configuration:" in out and "'mode': 'select'" in out and "'n': 2" in out


def test_optimize_local(fake_local, monkeypatch, capsys, tmp_path):
    _run("optimize_local", monkeypatch, "--trials", "4", "--storage", f"sqlite:///{tmp_path / 'study.db'}")
    out = capsys.readouterr().out
    assert "chosen configuration:" in out and "-> exact match 1.00 on 7 problems" in out
    assert "teacher generations in the bank" in out


def test_gepa_local(fake_local, monkeypatch, capsys):
    from fusion_dspy.programs.data import find_data_file

    if find_data_file("wmt24_general/en-de") is None:
        pytest.skip("no WMT24 en-de in the benchmark data directory (set FUSION_DSPY_DATA_DIR)")
    _run("gepa_local", monkeypatch, "--budget", "6", "--train", "2", "--val", "2", "--test", "2")
    out = capsys.readouterr().out
    assert "compiled fusor instruction:" in out and "held-out chrF on 2 segments" in out
    assert "uncompiled" in out and "W/T/L" in out
    fusor = fake_local["qwen2.5-1.5b"]
    # Only the fusor model ran (the teachers are recorded): GEPA's evaluations plus the held-out test.
    assert fusor.calls >= 4
