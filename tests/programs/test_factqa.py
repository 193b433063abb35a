from __future__ import annotations

import json

import dspy
import pytest
from fusion_dspy.programs.factqa import FactQAProgram
from fusion_dspy.programs.factqa import answer_match
from fusion_dspy.programs.factqa import load_geofactx

from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine


def example(*answers: str) -> dspy.Example:
    return dspy.Example(question="q", answers=list(answers)).with_inputs("question")


@pytest.mark.parametrize(
    ("answers", "guess", "score"),
    [
        (["Guitar", "Slide Guitar"], "guitar", 1.0),  # case and punctuation normalized
        (["Guitar", "Slide Guitar"], "The slide guitar.", 1.0),  # contains an accepted phrase
        (["Guitar"], "Guitarist", 0.0),  # whole phrases only
        (["WHOI", "Woods Hole"], "MIT", 0.0),
        (["A"], "A cat", 0.0),  # a one-letter reference must match exactly
        (["A"], "a", 1.0),
        (["ダダサーヘブ・ファルケ"], "インド映画の父はダダサーヘブ・ファルケです", 1.0),  # unspaced script
        (["Paris"], "", 0.0),
        (["Paris"], "Parisian", 0.0),
        (["New York"], "It is New York.", 1.0),
        # Devanagari vowel signs and viramas (combining marks) continue a word.
        (["भारत"], "भारती", 0.0),  # Bharat is not Bharti
        (["राम"], "रामायण", 0.0),
        (["भारत"], "भारत्", 0.0),
        (["भारत"], "उत्तर भारत है", 1.0),
        (["भारती"], "उत्तर: भारती।", 1.0),
    ],
)
def test_answer_match(answers, guess, score):
    assert answer_match(example(*answers), dspy.Prediction(answer=guess)) == score


def test_load_geofactx_prefers_corrected_answers_and_filters_languages(tmp_path):
    rows = [
        {"question": "Q en", "answer_list": ["old"], "corrected_answer_list": ["new"], "reasoning": "r",
         "language": "english", "topic": "t"},
        {"question": "Q sw", "answer_list": ["jibu"], "corrected_answer_list": [], "language": "swahili"},
    ]
    path = tmp_path / "geo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    examples = load_geofactx(data_files=path)
    assert [e.answers for e in examples] == [["new"], ["jibu"]]
    assert [e.question for e in load_geofactx(data_files=path, languages=["swahili"])] == ["Q sw"]


def test_factqa_program_nested_and_fused():
    teacher = FakeEngine(name="t", responder=lambda r: {"reasoning": "r", "answer": f"Canberra {r.seed}"})
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "reasoning": "fused", "answer": "Canberra"})

    class Wrapper(dspy.Module):
        def __init__(self):
            super().__init__()
            self.qa = FactQAProgram(n=2, teachers=[Teacher(teacher.lm(), name="t")], fusor=fusor.lm(), guard=False)

        def forward(self, question: str) -> dspy.Prediction:
            return self.qa(question=question)

    pred = Wrapper()(question="Capital of Australia?")
    assert (pred.reasoning, pred.answer) == ("fused", "Canberra") and pred.fusion.path == "fuse"
    assert answer_match(example("Canberra"), pred) == 1.0


def test_real_geofactx(real_data):
    if not (real_data / "geofactx" / "geofact_x_test.jsonl").exists():
        pytest.skip("no geofactx in the data directory")
    examples = load_geofactx(languages=["swahili"], limit=10)
    assert len(examples) == 10 and all(e.answers for e in examples)


def test_real_geofactx_answers_match_themselves(real_data):
    if not (real_data / "geofactx" / "geofact_x_test.jsonl").exists():
        pytest.skip("no geofactx in the data directory")
    examples = load_geofactx()
    assert [e.answers for e in examples if answer_match(e, dspy.Prediction(answer=e.answers[0])) != 1.0] == []


def test_limit_zero_is_no_rows_and_a_negative_limit_is_refused(tmp_path):
    path = tmp_path / "geo.jsonl"
    path.write_text("".join(json.dumps({"question": f"Q{i}", "answer_list": ["a"], "language": "english"}) + "\n"
                            for i in range(3)))
    assert load_geofactx(data_files=path, limit=0) == []  # was one row
    assert len(load_geofactx(data_files=path, limit=2)) == 2
    with pytest.raises(ValueError, match="limit"):
        load_geofactx(data_files=path, limit=-1)


@pytest.mark.parametrize(
    ("answers", "guess", "score"),
    [
        (["2013"], "2013年です", 1.0),  # Japanese: "It is 2013"; the number is written right against 年
        (["2013"], "ปี2013", 1.0),  # Thai: "year 2013"
        (["Knopf"], "出版社はKnopfです", 1.0),
        (["Moby Dick"], "答えはMoby Dickです。", 1.0),
        # Unchanged: a letter or digit next to the phrase still continues its word.
        (["2013"], "12013年", 0.0),
        (["Knopf"], "はKnopfs", 0.0),
    ],
)
def test_a_latin_or_digit_answer_inside_unspaced_text_is_a_whole_phrase(answers, guess, score):
    assert answer_match(example(*answers), dspy.Prediction(answer=guess)) == score


def test_a_single_answer_string_is_one_answer_not_its_letters():
    one = dspy.Example(question="q", answers="Paris").with_inputs("question")
    assert answer_match(one, dspy.Prediction(answer="p")) == 0.0  # was 1.0: "p" equals the letter "P"
    assert answer_match(one, dspy.Prediction(answer="It is Paris.")) == 1.0


def test_a_missing_data_file_is_reported_as_a_file_not_a_hub_name(tmp_path):
    from fusion_dspy.programs.factqa import TASK

    # A typo in a relative file name was sent to the hub ("Couldn't reach 'geo_typo.jsonl' on the Hub").
    with pytest.raises(FileNotFoundError, match="geo_typo.jsonl"):
        TASK.load("geo_typo.jsonl")


def test_a_language_filter_that_matches_nothing_says_so(tmp_path):
    path = tmp_path / "geo.jsonl"
    path.write_text("".join(json.dumps({"question": f"Q {lang}", "answer_list": ["a"], "language": lang}) + "\n"
                            for lang in ("english", "swahili")))
    # A single name as a string was split into letters; a name in another spelling matched nothing: both gave [].
    assert [e.language for e in load_geofactx(data_files=path, languages="swahili")] == ["swahili"]
    with pytest.raises(ValueError, match="english"):
        load_geofactx(data_files=path, languages=["English"])
