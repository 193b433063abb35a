from __future__ import annotations

import decimal
import json

import dspy
import pytest
from fusion_dspy.programs.math import MGSM_LANGUAGES
from fusion_dspy.programs.math import MathProgram
from fusion_dspy.programs.math import exact_number_match
from fusion_dspy.programs.math import extract_number
from fusion_dspy.programs.math import load_gsm8k
from fusion_dspy.programs.math import load_math
from fusion_dspy.programs.math import load_mgsm

from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine


@pytest.mark.parametrize(
    ("text", "number"),
    [("18", "18"), ("$1,250.00", "1250"), ("16 - 3 - 4 = 9, so 9 * 2 = 18 dollars", "18"), ("-3.5", "-3.5"),
     (".5", "0.5"), (42, "42"), ("no number", None), (None, None)],
)
def test_extract_number_takes_the_last_number(text, number):
    expected = None if number is None else decimal.Decimal(number)
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("3/4", "0.75"), ("1/2", "0.5"), ("-3/4", "-0.75"), ("She ate 1/4 of it, so 3/4 is left", "0.75"),
        ("\u22125", "-5"), ("-$5", "-5"), ("$-5", "-5"), ("(-5)", "-5"), ("= \u2212$1,250.00", "-1250"),
        ("5-3", "3"), ("COVID-19", "19"), ("x-5", "5"), ("1.000.000", "1000000"), ("-12.345.678", "-12345678"),
        # Unchanged:
        ("1,000", "1000"), ("$18", "18"), ("18.0", "18"), ("-5", "-5"), ("2,125", "2125"), ("18,000.50", "18000.5"),
        ("1.000", "1"), ("18.", "18"), ("\uff11\uff18", "18"), ("The answer is 18. Step 2", "2"), ("5 - 3", "3"),
    ],
)
def test_extract_number_signs_fractions_and_thousands(text, number):
    assert extract_number(text) == decimal.Decimal(number)


def test_extract_number_of_a_fraction_over_zero_is_none():
    assert extract_number("3/0") is None


def test_exact_number_match_compares_numerically():
    example = dspy.Example(question="q", answer="18")
    assert exact_number_match(example, dspy.Prediction(answer="18.00")) == 1.0
    assert exact_number_match(example, dspy.Prediction(answer="The answer is $18.")) == 1.0
    assert exact_number_match(example, dspy.Prediction(answer="19")) == 0.0
    assert exact_number_match(example, dspy.Prediction(answer="")) == 0.0
    assert exact_number_match(example, dspy.Prediction(answer=18.0)) == 1.0


def test_load_gsm8k_and_mgsm_from_local_files(tmp_path):
    gsm = tmp_path / "test.jsonl"
    gsm.write_text(json.dumps({"question": "Q1?", "answer": "3 + 4 = <<3+4=7>>7\n#### 1,007"}) + "\n")
    [example] = load_gsm8k(data_files=gsm)
    assert example.answer == "1007" and example.solution.startswith("3 + 4")
    assert set(example.inputs().keys()) == {"question"}
    mgsm = tmp_path / "mgsm_de.tsv"
    mgsm.write_text('Sie sagt "hallo" und zählt 3 Äpfel.\t3\nZweite Frage?\t12\n', encoding="utf-8")
    examples = load_mgsm("de", data_files=mgsm)
    assert [(e.question, e.answer) for e in examples] == [('Sie sagt "hallo" und zählt 3 Äpfel.', "3"),
                                                          ("Zweite Frage?", "12")]
    assert len(load_math(mgsm, limit=1)) == 1 and load_math(gsm)[0].answer == "1007"
    with pytest.raises(ValueError, match="Unknown MGSM language"):
        load_mgsm("xx")


def test_math_program_defaults_to_majority_vote_on_the_answer():
    answers = iter(["17", "18", "18"])
    teacher = FakeEngine(name="t", responder=lambda r: {"reasoning": f"seed {r.seed}", "answer": next(answers)})
    fusor = FakeEngine(name="f")
    program = MathProgram(n=3, teachers=[Teacher(teacher.lm(), name="t")], fusor=fusor.lm(), max_threads=1)

    class Solver(dspy.Module):  # the program nested in a larger module
        def __init__(self):
            super().__init__()
            self.math = program

        def forward(self, problem: str) -> dspy.Prediction:
            return self.math(question=problem.strip())

    pred = Solver()(problem=" What is 9*2? ")
    assert pred.answer == 18.0 and pred.fusion.path == "select" and pred.fusion.selection.selector == "majority"
    assert fusor.calls == 0  # reasoning differs in every candidate; the vote is on the answer field only


def test_real_gsm8k_and_mgsm(real_data):
    if not (real_data / "gsm8k" / "test.jsonl").exists():
        pytest.skip("no gsm8k in the data directory")
    examples = load_gsm8k(limit=5)
    assert len(examples) == 5 and all(extract_number(e.answer) is not None for e in examples)
    assert load_gsm8k(limit=1)[0].answer == "18"
    assert len(load_mgsm("ja")) == 250


def test_every_real_gold_answer_parses_as_written(real_data):
    # Gold answers are integers, some with thousands commas ("2,125") and a sign: read exactly as written.
    if not (real_data / "gsm8k" / "test.jsonl").exists() or not (real_data / "mgsm").is_dir():
        pytest.skip("no gsm8k or mgsm in the data directory")
    golds = [e.answer for e in load_gsm8k()] + [e.answer for lang in MGSM_LANGUAGES for e in load_mgsm(lang)]
    assert len(golds) > 4000
    assert [g for g in golds if extract_number(g) != decimal.Decimal(g.replace(",", ""))] == []
