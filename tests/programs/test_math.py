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


@pytest.mark.parametrize(
    ("text", "number"),
    [("2 1/2", "2.5"), ("It takes 3 1/2 hours", "3.5"), ("-2 1/2", "-2.5"), ("1,2,3", "3"), ("1.5e3", "1500"),
     ("2E-2", "0.02"), ("1,000, and 7", "7"), ("costs 1,000, so", "1000")],
)
def test_extract_number_mixed_numbers_lists_and_exponents(text, number):
    """Before: "2 1/2" read 0.5, "1,2,3" (a list) read 123, "1.5e3" read 3."""
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


def _write_gsm(tmp_path, count=3):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"question": f"Q{i}?", "answer": f"#### {i}"}) + "\n" for i in range(count)))
    mgsm = tmp_path / "mgsm_en.tsv"
    mgsm.write_text("".join(f"Q{i}?\t{i}\n" for i in range(count)))
    return path, mgsm


def test_limit_zero_is_no_rows_and_a_negative_limit_is_refused(tmp_path):
    gsm, mgsm = _write_gsm(tmp_path)
    assert load_gsm8k(data_files=gsm, limit=0) == [] and load_mgsm("en", data_files=mgsm, limit=0) == []
    assert len(load_gsm8k(data_files=gsm, limit=2)) == 2 and len(load_mgsm("en", data_files=mgsm, limit=5)) == 3
    # A negative limit sliced rows off the end (limit=-1 kept all but the last problem).
    for load in (lambda limit: load_gsm8k(data_files=gsm, limit=limit),
                 lambda limit: load_mgsm("en", data_files=mgsm, limit=limit),
                 lambda limit: load_math(gsm, limit=limit)):
        with pytest.raises(ValueError, match="limit"):
            load(-1)


def test_mgsm_file_with_a_trailing_blank_line_loads_and_a_bad_row_names_its_line(tmp_path):
    mgsm = tmp_path / "mgsm_en.tsv"
    mgsm.write_text("Q1?\t3\nQ2?\t4\n\n", encoding="utf-8")  # was: "not enough values to unpack"
    assert [(e.question, e.answer) for e in load_mgsm("en", data_files=mgsm)] == [("Q1?", "3"), ("Q2?", "4")]
    mgsm.write_text("Q1?\t3\nQ2 has\ta tab?\t4\n", encoding="utf-8")  # was: "too many values to unpack"
    with pytest.raises(ValueError, match=r"mgsm_en\.tsv.*line 2"):
        load_mgsm("en", data_files=mgsm)


def test_gsm8k_file_with_numeric_answers_loads(tmp_path):
    # A JSON number as the answer raised AttributeError ('int' object has no attribute 'rpartition').
    path = tmp_path / "own.jsonl"
    path.write_text(json.dumps({"question": "9*2?", "answer": 18}) + "\n")
    [example] = load_gsm8k(data_files=path)
    assert exact_number_match(example, dspy.Prediction(answer=18.0)) == 1.0


def test_a_missing_mgsm_file_is_reported_as_a_file_not_a_language(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="mgsm_de.tsv"):  # was: "Unknown MGSM language 'de.tsv'"
        load_math("mgsm_de.tsv")
