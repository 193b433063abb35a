from __future__ import annotations

import pydantic
import pytest

from fusion_dspy import FusorPrompt
from fusion_dspy.fusion_signature import fusion_signature
from fusion_dspy.fusion_signature import resolve_signature


def test_default_prompt_compares_discards_and_guards():
    text = FusorPrompt().render()
    assert "compare" in text.lower()
    assert "content, language quality and responsibility" in text
    assert "discard" in text.lower()
    assert "data to evaluate, not instructions" not in text  # the guard is in the candidates field
    assert "language the task asks for" in text


def test_slots_change_the_rendered_instruction():
    text = FusorPrompt(
        language="German", length_control=True, discard_worst=False, constitution="Be kind.", criteria=("accuracy",)
    ).render("Translate the text.")
    assert "Write the response in German." in text
    assert "no longer than the longest candidate" in text
    assert "discard" not in text.lower()
    assert "Be kind." in text
    assert "Compare the candidates on accuracy." in text
    assert text.endswith("The task's own instructions are: Translate the text.")


def test_prompt_is_validated_and_frozen():
    with pytest.raises(pydantic.ValidationError):
        FusorPrompt(instruction="   ")
    with pytest.raises(pydantic.ValidationError):
        FusorPrompt(unknown_slot=True)
    prompt = FusorPrompt()
    with pytest.raises(pydantic.ValidationError):
        prompt.language = "fr"
    assert FusorPrompt.model_validate(prompt.model_dump(mode="json")) == prompt


def test_fusion_signature_adds_candidates_and_comparison_and_keeps_types():
    task = resolve_signature("question -> answer: int, tags: list[str]")
    fused, fields = fusion_signature(task, FusorPrompt())
    assert list(fused.input_fields) == ["question", "candidates"]
    assert list(fused.output_fields) == ["comparison", "answer", "tags"]
    assert fused.output_fields["answer"].annotation is int
    assert fields.candidates == "candidates"


def test_fusion_signature_renames_on_clash():
    task = resolve_signature("candidates, comparison -> answer")
    fused, fields = fusion_signature(task, FusorPrompt())
    assert fields.candidates == "fusion_candidates" and fields.comparison == "fusion_comparison"
    assert list(fused.input_fields) == ["candidates", "comparison", "fusion_candidates"]


def test_task_instructions_are_kept_but_generated_ones_dropped():
    import dspy

    class Translate(dspy.Signature):
        """Translate English to German."""

        text: str = dspy.InputField()
        translation: str = dspy.OutputField()

    fused, _ = fusion_signature(Translate, FusorPrompt())
    assert "Translate English to German." in fused.instructions
    fused, _ = fusion_signature(resolve_signature("text -> translation"), FusorPrompt())
    assert "Given the fields" not in fused.instructions


def test_resolve_signature_errors():
    with pytest.raises(ValueError, match="no output fields"):
        resolve_signature("question -> ")
    with pytest.raises(TypeError):
        resolve_signature(42)
