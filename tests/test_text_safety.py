"""Text safety at the boundary: LM output no file can hold is made safe where it enters a Fuse call."""

from __future__ import annotations

import json

import pydantic
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.evaluate.journal import Journal
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import StoredDraw
from fusion_dspy.text_safety import REPLACEMENT
from fusion_dspy.text_safety import clean_text
from fusion_dspy.text_safety import clean_value
from fusion_dspy.text_safety import json_line
from tests.helpers import fusor_engine
from tests.helpers import teacher_engine

HOSTILE = ["bad \ud800 tail", "\udfff", "nul\x00inside", "pair \ud83d\ude00 ok", "mixed \x00\udc80\ud800"]


class Inner(pydantic.BaseModel):
    text: str
    tags: list[str]


@pytest.mark.parametrize("text", HOSTILE)
def test_clean_text_is_encodable_and_counts_changes(text):
    cleaned, changes = clean_text(text)
    cleaned.encode("utf-8")  # does not raise
    assert "\x00" not in cleaned and changes >= 1
    assert clean_text(cleaned) == (cleaned, 0)  # idempotent


def test_clean_text_keeps_safe_text_and_joins_pairs():
    for text in ["plain", "héllo wörld", "日本語 🙂", "tab\tand\nnewline\x07bell"]:
        assert clean_text(text) == (text, 0)
    assert clean_text("\ud83d\ude00") == ("\U0001f600", 1)
    assert clean_text("a\ud800b") == (f"a{REPLACEMENT}b", 1)


def test_clean_value_walks_lists_dicts_and_models():
    value = {"k\ud800": ["x\x00", ("y", "\udfff")], "model": Inner(text="t\ud800", tags=["\x00", "ok"]), "n": 3}
    cleaned, changes = clean_value(value)
    assert changes == 5
    json.dumps(cleaned, default=lambda m: m.model_dump(mode="json")).encode("utf-8")
    assert cleaned["model"].model_dump_json()  # does not raise
    assert isinstance(cleaned["model"], Inner) and cleaned["n"] == 3
    assert cleaned[f"k{REPLACEMENT}"][1] == ("y", REPLACEMENT)
    clean = {"a": ["b", Inner(text="c", tags=[])], "n": None}
    again, count = clean_value(clean)
    assert count == 0 and again is clean  # nothing rebuilt when nothing changed


def _fuse(answer, **kwargs):
    teachers = [Teacher(teacher_engine("a", answer=answer).lm(), name="a"), Teacher(teacher_engine("b").lm(), name="b")]
    return Fuse("question -> answer", 2, teachers=teachers, fusor=fusor_engine().lm(), **kwargs)


@pytest.mark.parametrize("mode", ["select", "fuse"])
def test_lone_surrogate_candidate_with_a_jsonl_store_does_not_crash(tmp_path, mode):
    # The repro: a candidate holding "\ud800" (json.loads of an API reply) with a JsonlStore attached
    # raised UnicodeEncodeError; model_dump_json() of the report raised too.
    store = JsonlStore(tmp_path / "bank.jsonl")
    pred = _fuse("bad \ud800 answer", mode=mode, store=store)(question="q")
    report = pred.fusion
    json.loads(report.model_dump_json())  # does not raise
    record = next(c for c in report.candidates if c.teacher == "a")
    assert record.sanitized == 1 and record.outputs["answer"] == f"bad {REPLACEMENT} answer"
    assert next(c for c in report.candidates if c.teacher == "b").sanitized == 0
    str(pred.answer).encode("utf-8")
    # The store line is valid UTF-8 JSON and replays to the same (cleaned) candidate.
    (tmp_path / "bank.jsonl").read_bytes().decode("utf-8")
    replayed = _fuse("never asked", mode=mode, store=JsonlStore(tmp_path / "bank.jsonl"))(question="q").fusion
    again = next(c for c in replayed.candidates if c.teacher == "a")
    assert again.cached and again.outputs == record.outputs and again.sanitized == 1


def test_fusor_output_is_cleaned_and_recorded():
    fusor = fusor_engine(answer="fused \x00 \ud800").lm()
    teachers = [Teacher(teacher_engine("a").lm(), name="a"), Teacher(teacher_engine("b").lm(), name="b")]
    pred = Fuse("question -> answer", 2, teachers=teachers, fusor=fusor, guard=False)(question="q")
    assert pred.fusion.path == "fuse"
    assert pred.answer == f"fused {REPLACEMENT} {REPLACEMENT}" and pred.fusion.fusor.sanitized == 2
    pred.fusion.model_dump_json()


def test_writers_never_raise_on_unencodable_text(tmp_path):
    assert json_line({"a": "é"}) == '{"a": "é"}'  # readable text stays readable
    assert json.loads(json_line({"a": "\ud800"})) == {"a": "\ud800"}  # lossless escape
    store = JsonlStore(tmp_path / "s.jsonl")
    store.put("k", StoredDraw(outputs={"answer": "x\ud800"}, usage={}))
    assert JsonlStore(tmp_path / "s.jsonl").get("k").outputs == {"answer": "x\ud800"}
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"text": "\udfff"})
    assert list(journal) == [{"text": "\udfff"}]


def test_a_judge_rationale_with_a_lone_surrogate_is_cleaned():
    from fusion_dspy.selectors import LLMJudge
    from fusion_dspy.testing import FakeEngine

    judge = LLMJudge(lm=FakeEngine(responder=lambda request: {"reasoning": "good \ud800", "score": 7}).lm())
    pred = _fuse("plain", mode="select", selector=judge)(question="q")
    assert REPLACEMENT in pred.fusion.selection.rationale
    json.loads(pred.fusion.model_dump_json())


def test_synth_with_a_lone_surrogate_candidate_completes_and_resumes(tmp_path):
    # The repro: synth stopped at such a prompt on every resume, forever.
    from fusion_dspy.synth import synthesize
    from fusion_dspy.synth.prompts import make_prompts

    prompts = make_prompts([{"question": "one"}, {"question": "two"}], ["question"])
    result = synthesize(_fuse("bad \ud800 answer"), prompts, tmp_path / "run", progress=False, export=False)
    assert result.complete and result.generated == 2 and not result.failed
    for shard in (tmp_path / "run" / "shards").glob("*.jsonl"):
        shard.read_bytes().decode("utf-8")
    again = synthesize(_fuse("bad \ud800 answer"), prompts, tmp_path / "run", progress=False, export=False)
    assert again.complete and again.resumed == 2 and again.generated == 0


def test_a_lone_surrogate_in_the_inputs_is_a_clear_fusion_error_not_a_store_crash(tmp_path):
    # Inputs are the caller's, not LM output: they are not rewritten. DSPy refuses to send such text
    # and says so; the store's key no longer raises UnicodeEncodeError before that.
    from fusion_dspy.errors import CandidatesExhaustedError

    with pytest.raises(CandidatesExhaustedError, match="lone surrogate") as caught:
        _fuse("ok", store=JsonlStore(tmp_path / "bank.jsonl"))(question="q \ud800")
    json.loads(caught.value.report.model_dump_json())
