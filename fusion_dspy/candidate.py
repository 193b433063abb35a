"""One teacher draw and its outcome: the unit that selectors rank and the fusor reads."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

__all__ = ["Candidate", "neutralize_markers", "render_candidates", "render_outputs", "render_value"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A successful teacher draw.

    Attributes:
        index: Position of the draw in the Fuse plan (``0 .. n-1``); stable across calls.
        teacher: Name of the teacher that produced it.
        sample: Index of this draw among the same teacher's draws.
        outputs: Values of the task signature's output fields, already parsed and typed.
    """

    index: int
    teacher: str
    sample: int
    outputs: Mapping[str, Any]

    def text(self, fields: tuple[str, ...] | None = None) -> str:
        """The candidate's output fields as plain text (used by string metrics and the fusor)."""
        return render_outputs(self.outputs, fields)


def render_value(value: Any) -> str:
    """Render one output value as text: strings verbatim, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):  # pydantic models
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def render_outputs(outputs: Mapping[str, Any], fields: tuple[str, ...] | None = None) -> str:
    """Render several output fields; a single field is rendered bare, several as ``name: value`` lines."""
    names = tuple(fields) if fields is not None else tuple(outputs)
    if len(names) == 1:
        return render_value(outputs.get(names[0]))
    return "\n".join(f"{name}: {render_value(outputs.get(name))}" for name in names)


def render_candidates(candidates: Sequence[Candidate], fields: tuple[str, ...] | None = None) -> str:
    """Render candidates as clearly delimited, numbered data blocks for an LLM to read.

    Candidate text is untrusted model output: it is fenced in ``<candidate id=K>`` tags, and text
    inside it that could close the fence early or pose as a DSPy field marker is neutralised, so a
    hostile candidate cannot pose as the end of the data or as a new prompt field.
    """
    blocks = []
    for number, candidate in enumerate(candidates, start=1):
        body = neutralize_markers(candidate.text(fields))
        body = body.replace("<candidate", "< candidate").replace("</candidate", "< /candidate")
        blocks.append(f"<candidate id={number}>\n{body}\n</candidate>")
    return "\n\n".join(blocks)


def neutralize_markers(text: str) -> str:
    """Break DSPy ChatAdapter field markers (``[[ ## name ## ]]``) inside untrusted text.

    Without this a candidate containing ``[[ ## answer ## ]]`` would look, to the reading model,
    like the start of a new prompt field. The edit is idempotent and keeps the text readable.
    """
    return text.replace("[[ ##", "[ [ ##").replace("## ]]", "## ] ]")
