from __future__ import annotations

import decimal
import json

import dspy
import pytest
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
