"""Read the prompts of a synthetic-data run and give each a stable id."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.hashing import stable_hash

__all__ = ["Prompt", "iter_prompts", "load_prompts", "make_prompts"]


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One unit of work: its id, its position in the prompt file, and the task inputs."""

    id: str
    index: int
    inputs: dict[str, Any]


def make_prompts(rows: Iterable[dict[str, Any]], input_fields: Sequence[str]) -> list[Prompt]:
    """Map rows to the task's input fields and give each a stable id.

    A row provides the input fields by name; a row with only ``prompt`` (or ``instruction``) fills
    a single-input task. The id is the row's ``id`` when present, else a hash of its inputs (plus an
    occurrence number for repeated prompts), so ids survive re-ordering and appending to the file.
    """
    return list(_prompts(enumerate(rows), input_fields))


def _prompts(rows: Iterable[tuple[int, dict[str, Any]]], input_fields: Sequence[str]) -> Iterator[Prompt]:
    """:func:`make_prompts` one row at a time (only the ids seen so far are held)."""
    seen: dict[str, int] = {}
    for index, row in rows:
        if all(name in row for name in input_fields):
            inputs = {name: row[name] for name in input_fields}
        elif len(input_fields) == 1 and ("prompt" in row or "instruction" in row):
            inputs = {input_fields[0]: row.get("prompt", row.get("instruction"))}
        else:
            raise ValueError(
                f"Prompt #{index} has fields {sorted(row)} but the task needs {list(input_fields)}; "
                "give every row those fields (or 'prompt' for a single-input task)."
            )
        if row.get("id") is not None:
            pid = str(row["id"])
            if pid in seen:
                raise ValueError(f"Duplicate prompt id {pid!r} (rows {seen[pid]} and {index}); ids must be unique.")
        else:
            digest = stable_hash(inputs, length=16)
            pid, occurrence = digest, 1
            while pid in seen:
                occurrence += 1
                pid = f"{digest}-{occurrence}"
        seen[pid] = index
        yield Prompt(id=pid, index=index, inputs=inputs)


def iter_prompts(path: str | os.PathLike[str], input_fields: Sequence[str]) -> Iterator[Prompt]:
    """Stream a JSON Lines prompt file (one object or string per line) as :class:`Prompt` objects.

    Only the ids seen so far stay in memory, so a million-prompt file streams into
    :func:`~fusion_dspy.synth.pipeline.synthesize`. Errors (bad JSON, missing fields, duplicate
    ids) are raised when the offending line is reached; :func:`load_prompts` checks the whole file first.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Prompt file {path} does not exist.")
    yield from _prompts(enumerate(_rows(path)), input_fields)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    empty = True
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error}).") from error
            if isinstance(row, str):
                row = {"prompt": row}
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object or string, got {type(row).__name__}.")
            empty = False
            yield row
    if empty:
        raise ValueError(f"{path} holds no prompts.")


def load_prompts(path: str | os.PathLike[str], input_fields: Sequence[str]) -> list[Prompt]:
    """Read a JSON Lines prompt file (one object per line) into :class:`Prompt` objects."""
    return list(iter_prompts(path, input_fields))
