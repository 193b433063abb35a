from __future__ import annotations

import dspy
import pytest
from fusion_dspy.programs.math import SolveMath
from fusion_dspy.programs.recorded import RecordedEngine
from fusion_dspy.programs.recorded import recorded_lm
from fusion_dspy.programs.recorded import recorded_teachers
from fusion_dspy.programs.translate import Translate
from fusion_dspy.programs.translate import load_wmt_general

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.testing import FakeEngine

ROWS = [
    {"source": "Good morning.", "source_language": "English", "target_language": "German",
     "system_outputs": {"A": "Guten Morgen.", "B": "Schönen Morgen.", "C": ""}},
    {"source": "Thank you\n  very much.", "source_language": "English", "target_language": "German",
     "system_outputs": {"A": "Vielen Dank.", "B": "Danke sehr."}},
]


def fusor(answer: str = "fused") -> FakeEngine:
    return FakeEngine(name="fusor", responder=lambda r: {"comparison": "c", "translation": answer})


def test_recorded_teachers_replay_their_outputs_through_fuse():
    engine = fusor()
    fuse = Fuse(Translate, n=2, teachers=recorded_teachers(ROWS, ["A", "B"]), fusor=engine.lm(), guard=False)
    pred = fuse(**{k: ROWS[0][k] for k in ("source", "source_language", "target_language")})
    assert [(c.teacher, c.outputs) for c in pred.fusion.candidates] == [
        ("A", {"translation": "Guten Morgen."}),
        ("B", {"translation": "Schönen Morgen."}),
    ]
    assert pred.translation == "fused"
    # The fusor saw both real outputs; the replay itself cost no tokens.
    assert "Guten Morgen." in engine.requests[0].inputs["candidates"]
    assert all(u.input_tokens == 0 and u.output_tokens == 0 for c in pred.fusion.candidates for u in c.usage.values())


def test_lookup_ignores_whitespace_reflow_and_select_mode_needs_no_fusor():
    engine = fusor()
    fuse = Fuse(Translate, n=2, teachers=recorded_teachers(ROWS, ["A", "B"]), fusor=engine.lm(), mode="select")
    pred = fuse(source="Thank you very much.", source_language="English", target_language="German")
    assert pred.fusion.path == "select" and pred.translation in {"Vielen Dank.", "Danke sehr."}
    assert engine.calls == 0


def test_missing_and_empty_recordings_are_failed_candidates_not_inventions():
    fuse = Fuse(Translate, n=3, teachers=recorded_teachers(ROWS, ["A", "B", "C"]), fusor=fusor().lm())
    pred = fuse(source="Good morning.", source_language="English", target_language="German")
    failed = pred.fusion.failed
    assert [c.teacher for c in failed] == ["C"] and "empty" in failed[0].error
    pred = fuse.configure(n=2)(source="Good morning.", source_language="English", target_language="German")
    assert not pred.fusion.failed
    with pytest.raises(Exception, match="no recorded output for 'Unknown"):
        fuse(source="Unknown text", source_language="English", target_language="German")


def test_recorded_teachers_are_deterministic_single_sample_teachers():
    teachers = recorded_teachers(ROWS, ["A"])
    assert teachers[0].temperature == 0 and teachers[0].samples == 1 and teachers[0].name == "A"
    with pytest.raises(ValueError, match="temperature 0"):
        Fuse(Translate, n=2, teachers=teachers, fusor=fusor().lm())


def test_dict_recordings_fill_several_output_fields_and_json_adapter_works():
    lm = RecordedEngine({"What is 6*7?": {"reasoning": "6*7=42", "answer": "42"}}, key_fields=["question"]).lm()
    predict = dspy.Predict(SolveMath)
    assert predict(question="What is 6*7?", lm=lm).answer == 42.0
    with dspy.context(adapter=dspy.JSONAdapter()):
        pred = predict(question="What is 6*7?", lm=lm)
    assert (pred.reasoning, pred.answer) == ("6*7=42", 42.0)


def test_text_recording_for_a_multi_output_task_is_rejected_with_a_fix():
    lm = recorded_lm([{"question": "q", "out": "42"}], "out", key_fields=["question"])
    with pytest.raises(Exception, match="pass output_field"):
        dspy.Predict(SolveMath)(question="q", lm=lm)


def test_wrong_key_fields_name_the_available_inputs():
    lm = RecordedEngine({"x": "y"}, key_fields=["text"]).lm()
    with pytest.raises(Exception, match="no input field"):
        dspy.Predict(Translate)(source="x", source_language="English", target_language="German", lm=lm)


def test_recorded_lm_survives_deepcopy_without_cloning():
    lm = recorded_lm(ROWS, lambda row: row["system_outputs"]["A"])
    fuse = Fuse(Translate, n=1, teachers=[Teacher(lm, temperature=0.0, name="A")], fusor=fusor().lm())
    copy = fuse.deepcopy()
    assert copy.teachers[0].lm.engine is lm.engine  # Teacher objects are shared, never cloned


def test_real_wmt_system_outputs_as_recorded_pool(real_data):
    if not (real_data / "wmt24_general" / "en-de").exists():
        pytest.skip("no wmt24_general/en-de in the data directory")
    examples = load_wmt_general(limit=3, max_source_chars=150)
    systems = ["GPT-4", "Claude-3.5", "Aya23"]
    fuse = Fuse(Translate, n=3, teachers=recorded_teachers(examples, systems), fusor=fusor().lm(), mode="select")
    for example in examples:
        pred = fuse(**example.inputs())
        assert [c.outputs["translation"] for c in pred.fusion.candidates] == [
            example.system_outputs[s].strip() for s in systems
        ]


def test_rows_with_one_key_and_different_outputs_are_refused_not_silently_overwritten():
    """Before: the last row won, and the first row's recorded output could never be replayed."""
    rows = [{"source": "Hi", "out": "Hallo"}, {"source": "Bye", "out": "Tschüss"}, {"source": "Hi", "out": "Servus"}]
    with pytest.raises(ValueError, match="rows 0 and 2"):
        recorded_lm(rows, "out")
    same = [{"source": "Hi", "out": "Hallo"}, {"source": "Hi", "out": "Hallo"}]
    assert recorded_lm(same, "out") is not None  # an exact duplicate row is harmless
