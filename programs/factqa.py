"""Factual reasoning in several languages (GeoFact-X style): step-by-step reasoning plus a short answer.

GeoFact-X (arXiv 2507.05418) asks geography-bound factual questions in English, Hindi, Japanese,
Swahili and Thai, with several accepted answers per question (``corrected_answer_list``). The metric
accepts an answer that equals an accepted one after normalization, or contains one as a whole
phrase ("The Delta blues is played on the slide guitar" contains "slide guitar"; a phrase may touch
Japanese, Chinese or Thai text, which has no spaces: "2013年です" contains "2013"); a reference shorter
than three characters must match exactly, so "A" never matches everything.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import dspy
from fusion_dspy.programs.data import check_limit
from fusion_dspy.programs.data import find_data_file
from fusion_dspy.programs.data import is_data_file
from fusion_dspy.programs.data import load_rows
from fusion_dspy.programs.task import TaskSpec

from fusion_dspy import Fuse
from fusion_dspy.normalize import normalize_value

__all__ = ["GEOFACTX_LANGUAGES", "TASK", "AnswerFact", "FactQAProgram", "answer_match", "load_geofactx"]

#: GeoFact-X languages as they appear in its ``language`` column.
GEOFACTX_LANGUAGES: tuple[str, ...] = ("english", "hindi", "japanese", "swahili", "thai")

# Scripts written without spaces between words, where "whole phrase" cannot rely on word boundaries.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff]")
_WORD = re.compile(r"\w")


class AnswerFact(dspy.Signature):
    """Answer the factual question. Reason step by step about the relevant facts, then give a short
    answer (a name, place, date or number) in the language of the question."""

    question: str = dspy.InputField()
    reasoning: str = dspy.OutputField(desc="Step-by-step reasoning about the relevant facts.")
    answer: str = dspy.OutputField(desc="The short answer only.")


class FactQAProgram(dspy.Module):
    """A fused factual QA module (answer plus reasoning).

    Args:
        fuse: A ready ``Fuse`` over :class:`AnswerFact`.
        **fuse_kwargs: Otherwise, arguments for ``Fuse(AnswerFact, **fuse_kwargs)``.
    """

    def __init__(self, *, fuse: Fuse | None = None, **fuse_kwargs: Any) -> None:
        super().__init__()
        self.fuse = fuse if fuse is not None else Fuse(AnswerFact, **fuse_kwargs)

    def forward(self, question: str) -> dspy.Prediction:
        return self.fuse(question=question)


def _contains_phrase(text: str, phrase: str) -> bool:
    if _UNSPACED.search(phrase):
        return phrase in text
    start = text.find(phrase)
    while start != -1:
        end = start + len(phrase)
        if not (start and _in_word(text[start - 1])) and not (end < len(text) and _in_word(text[end])):
            return True
        start = text.find(phrase, start + 1)
    return False


def _in_word(ch: str) -> bool:
    """Whether ``ch`` continues the word next to it: a regex word character (``\\w``) or a combining mark
    (M*), as Devanagari vowel signs and viramas are: "भारत" is not a whole word of "भारती". A character
    of a script written without spaces does not: "2013" is a whole phrase of "2013年です"."""
    if _UNSPACED.match(ch):
        return False
    return _WORD.match(ch) is not None or unicodedata.category(ch).startswith("M")


def answer_match(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """1.0 when the predicted answer matches one of ``example.answers``, else 0.0 (see module docs).

    ``example.answers`` is a list of accepted answers; a single string is one accepted answer.
    """
    raw = prediction.get("answer") if hasattr(prediction, "get") else prediction
    guess = normalize_value(raw if raw is not None else "")
    if not guess:
        return 0.0
    references = example.answers
    for reference in [references] if isinstance(references, str) else references:
        gold = normalize_value(reference)
        if not gold:
            continue
        if guess == gold or (len(gold) >= 3 and _contains_phrase(guess, gold)):
            return 1.0
    return 0.0


def load_geofactx(
    *,
    data_files: str | os.PathLike[str] | None = None,
    hub: str | None = None,
    languages: Sequence[str] | None = None,
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dspy.Example]:
    """GeoFact-X questions with their accepted answers (``answers``) and reference ``reasoning``.

    Reads ``geofactx/geofact_x_test.jsonl`` from the data directory unless ``data_files`` or ``hub`` is
    given. ``languages`` filters by the ``language`` column (e.g. ``["english", "swahili"]``; one name may
    be a plain string).

    Raises:
        ValueError: When ``languages`` matches no row (the message lists the languages the data has).
    """
    limit = check_limit(limit)
    files = data_files or (None if hub else find_data_file("geofactx/geofact_x_test.jsonl"))
    rows = load_rows(files, hub=hub, split="test", cache_dir=cache_dir)
    wanted = None if languages is None else {languages} if isinstance(languages, str) else set(languages)
    examples = []
    for row in rows:
        if limit is not None and len(examples) >= limit:
            break
        if wanted is not None and row.get("language") not in wanted:
            continue
        answers = row.get("corrected_answer_list") or row.get("answer_list") or []
        examples.append(
            dspy.Example(
                question=row["question"],
                answers=list(answers),
                reasoning=row.get("reasoning", ""),
                language=row.get("language"),
                topic=row.get("topic"),
            ).with_inputs("question")
        )
    if wanted is not None and rows and not examples and limit != 0:
        found = sorted({str(row.get("language")) for row in rows})
        raise ValueError(f"languages={sorted(wanted)} matches no row; the data has {found}.")
    return examples


def _load(data: str | os.PathLike[str] | None = None, *, limit: int | None = None) -> list[dspy.Example]:
    if data is None:
        return load_geofactx(limit=limit)
    if str(data) in GEOFACTX_LANGUAGES:
        return load_geofactx(languages=[str(data)], limit=limit)
    if is_data_file(data):
        return load_geofactx(data_files=data, limit=limit)
    return load_geofactx(hub=str(data), limit=limit)


TASK = TaskSpec(
    name="factqa",
    signature=AnswerFact,
    metric=answer_match,
    metric_name="answer match",
    load=_load,
    selectors=("majority", "mbr"),
    answer_fields=("answer",),
)
