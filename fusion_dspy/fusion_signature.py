"""Derive the fusor's signature from the task signature.

The fusor sees the task inputs plus one ``candidates`` field and produces a short ``comparison``
followed by exactly the task's output fields (with their types), so its answer *is* the fused
prediction. One ``candidates`` field (never one per candidate) keeps the signature independent of
N: a program saved at N=3 loads at N=5 (``Signature.load_state`` matches fields by position).

The candidate fencing and the prompt-injection guard live in the ``candidates`` field's description,
not in the instruction: MIPROv2, GEPA and ``with_instructions`` replace the instruction, never a
field's description, so a compiled fusor still receives them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import dspy

from fusion_dspy.candidate import Candidate
from fusion_dspy.hashing import type_text
from fusion_dspy.prompt import CANDIDATES_DESCRIPTION
from fusion_dspy.prompt import FusorPrompt
from fusion_dspy.strategies import comparison_description
from fusion_dspy.strategies import render_strategy_candidates

if TYPE_CHECKING:
    from fusion_dspy.config import FuseSettings

__all__ = [
    "FusionFields",
    "fusion_signature",
    "render_fusor_inputs",
    "resolve_signature",
    "signature_types",
    "task_instructions",
    "with_candidate_fence",
]


@dataclasses.dataclass(frozen=True)
class FusionFields:
    """Names of the two fields the fusion signature adds (renamed if the task already uses them)."""

    candidates: str = "candidates"
    comparison: str = "comparison"


def resolve_signature(signature: str | type[dspy.Signature]) -> type[dspy.Signature]:
    """Turn a string or class into a signature class, with errors that say how to fix the input."""
    if isinstance(signature, str):
        try:
            resolved = dspy.Signature(signature)
        except Exception as exc:  # DSPy raises several types for malformed strings.
            raise ValueError(
                f"Could not parse signature {signature!r}: {exc}. Write it as 'inputs -> outputs', "
                "e.g. 'question -> answer' or 'text -> label: bool'."
            ) from exc
    elif isinstance(signature, type) and issubclass(signature, dspy.Signature):
        resolved = signature
    else:
        raise TypeError(
            f"signature must be a string like 'question -> answer' or a dspy.Signature subclass, "
            f"got {type(signature).__name__}."
        )
    if not resolved.output_fields:
        raise ValueError(
            f"Signature {resolved.signature!r} has no output fields; Fuse needs at least one to fuse. "
            "Add one after '->', e.g. 'question -> answer'."
        )
    if not resolved.input_fields:
        raise ValueError(
            f"Signature {resolved.signature!r} has no input fields; add the task's inputs before '->'."
        )
    return resolved


def signature_types(signature: type[dspy.Signature]) -> dict[str, str]:
    """Each field's type as stable text (``{"question": "str", "answer": "int"}``), saved with a Fuse.

    Module paths are dropped (``list[Model]``, not ``list[__main__.Model]``), so a program saved from
    a script loads in a notebook that defines the same model.
    """
    return {name: type_text(field.annotation) for name, field in signature.fields.items()}


def task_instructions(signature: type[dspy.Signature]) -> str:
    """The task's own instructions, or ``""`` when DSPy generated them from the field names."""
    instructions = signature.instructions or ""
    inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
    outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
    if instructions.strip() == f"Given the fields {inputs}, produce the fields {outputs}.":
        return ""
    return instructions


def _free_name(signature: type[dspy.Signature], wanted: str) -> str:
    taken = set(signature.fields)
    name = wanted
    while name in taken:
        name = f"fusion_{name}"
    return name


def fusion_signature(
    signature: type[dspy.Signature], prompt: FusorPrompt
) -> tuple[type[dspy.Signature], FusionFields]:
    """Build the fusor signature for ``signature`` with ``prompt``'s rendered instruction."""
    fields = FusionFields(
        candidates=_free_name(signature, "candidates"),
        comparison=_free_name(signature, "comparison"),
    )
    fused = signature.append(
        fields.candidates,
        dspy.InputField(desc=CANDIDATES_DESCRIPTION),
        type_=str,
    )
    fused = fused.prepend(
        fields.comparison,
        dspy.OutputField(desc=comparison_description(prompt.strategy)),
        type_=str,
    )
    return fused.with_instructions(prompt.render(task_instructions(signature))), fields


def render_fusor_inputs(
    inputs: Mapping[str, Any],
    shown: Sequence[Candidate],
    *,
    settings: FuseSettings,
    fields: FusionFields,
    output_fields: tuple[str, ...],
) -> dict[str, Any]:
    """The fusor's inputs: the task inputs plus the candidates, in the order shown, fenced as data.

    The one place the fusor's view of a call is rendered (fusor strategies add to it from
    ``settings``); the fusor reads exactly what this returns.
    """
    rendered = dict(inputs)
    rendered[fields.candidates] = render_strategy_candidates(shown, output_fields, settings.prompt.strategy)
    return rendered


def with_candidate_fence(signature: type[dspy.Signature], fields: FusionFields) -> type[dspy.Signature]:
    """``signature`` with the ``candidates`` field's description (fencing + guard) as this version writes it.

    The fusor is called with this signature, so neither an optimizer nor an old saved program
    that changed the field's description can take the guard away.
    """
    field = signature.input_fields.get(fields.candidates)
    if field is None or (field.json_schema_extra or {}).get("desc") == CANDIDATES_DESCRIPTION:
        return signature
    return _refenced(signature, fields.candidates)


@functools.lru_cache(maxsize=128)
def _refenced(signature: type[dspy.Signature], name: str) -> type[dspy.Signature]:
    return signature.with_updated_fields(name, desc=CANDIDATES_DESCRIPTION)
