"""The evaluation harness's resume log: a :class:`fusion_dspy.journal.Journal` (one format, one policy).

Kept as an import path for the harness and synth; see :mod:`fusion_dspy.journal` for the write
discipline and the torn-tail policy. :func:`read_run` is the one reader of a finished or running
harness journal for offline analysis (the benchmark scripts re-score runs with it).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from fusion_dspy.journal import Journal
from fusion_dspy.journal import read_entries

__all__ = ["Journal", "RunEntries", "read_run"]


@dataclasses.dataclass(frozen=True)
class RunEntries:
    """What a harness run journaled.

    Attributes:
        candidates: Example id -> the journaled candidate records (failed draws included: a record
            without ``outputs``), as every method of that example saw them: the widest list journaled
            (a run resumed with other N values journals more than one; each is a prefix of the widest).
        results: Example id -> method -> the journaled result (the last one, as a resume reads it).
    """

    candidates: dict[str, list[dict[str, Any]]]
    results: dict[str, dict[str, dict[str, Any]]]


def read_run(path: str | os.PathLike[str]) -> RunEntries:
    """Read a harness journal (``results.jsonl``) without writing to it: the run may still be going, or
    was killed, and an unterminated last line is skipped, not cut (:func:`fusion_dspy.journal.read_entries`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"No harness journal at {os.fspath(path)!r}; give a run's results.jsonl.")
    candidates: dict[str, list[dict[str, Any]]] = {}
    widths: dict[str, int] = {}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in read_entries(path):
        if entry.get("kind") == "candidates":
            example, width = entry["example"], entry.get("n", len(entry["candidates"]))
            if width >= widths.get(example, width):  # the widest N's, the last of them
                candidates[example], widths[example] = list(entry["candidates"]), width
        elif entry.get("kind") == "result":
            result = entry["result"]
            results.setdefault(result["example"], {})[result["method"]] = result
    return RunEntries(candidates=candidates, results=results)
