"""Small helpers shared by the selectors: field names, argmax, and rendering for LLM prompts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.candidate import neutralize_markers
from fusion_dspy.candidate import render_value

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.candidate import Candidate

__all__ = [
    "best_position",
    "candidate_texts",
    "output_fields",
    "render_task",
    "require_candidates",
]


def require_candidates(candidates: Sequence[Candidate], selector: str) -> None:
    """Fail early and clearly on an empty candidate list (the contract says it never is)."""
    if len(candidates) == 0:
        raise ValueError(f"{selector}: select() needs at least one candidate, got none.")


def output_fields(signature: type[dspy.Signature] | None, candidates: Sequence[Candidate]) -> tuple[str, ...]:
    """The task's output field names in signature order (the first candidate's keys without one)."""
    if signature is not None:
        return tuple(signature.output_fields)
    return tuple(candidates[0].outputs) if candidates else ()


def candidate_texts(candidates: Sequence[Candidate], fields: tuple[str, ...]) -> list[str]:
    """Each candidate's outputs as plain text, fields in a fixed order so texts are comparable."""
    return [candidate.text(fields) for candidate in candidates]


def best_position(scores: Sequence[float]) -> int:
    """Index of the highest score; ties (and all ``-inf``) go to the lowest index, NaN never wins."""
    best = 0
    best_score = -math.inf
    for position, score in enumerate(scores):
        if not math.isnan(score) and score > best_score:
            best, best_score = position, score
    return best


def render_task(signature: type[dspy.Signature] | None, inputs: Mapping[str, Any]) -> str:
    """The task as a judge should see it: the signature's instructions, then its input values."""
    parts: list[str] = []
    instructions = (getattr(signature, "instructions", "") or "").strip()
    if instructions:
        parts.append(f"Instructions: {instructions}")
    names = [name for name in (signature.input_fields if signature is not None else ()) if name in inputs]
    names += [name for name in inputs if name not in names]
    for name in names:
        parts.append(f"{name}: {render_value(inputs[name])}")
    return neutralize_markers("\n".join(parts))
