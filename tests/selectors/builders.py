"""Candidates and signatures shared by the selector tests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import dspy

from fusion_dspy.candidate import Candidate


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class Reasoned(dspy.Signature):
    """Answer the question and explain."""

    question: str = dspy.InputField()
    reasoning: str = dspy.OutputField()
    answer: str = dspy.OutputField()


INPUTS = {"question": "What is the capital of France?"}


def answers(*values: Any) -> list[Candidate]:
    """One single-field candidate per value, from teachers ``t0``, ``t1``, ..."""
    return outputs(*({"answer": value} for value in values))


def outputs(*dicts: Mapping[str, Any]) -> list[Candidate]:
    """One candidate per outputs mapping."""
    return [Candidate(index=i, teacher=f"t{i}", sample=0, outputs=dict(d)) for i, d in enumerate(dicts)]


def candidate_blocks(text: str) -> dict[int, str]:
    """Parse ``<candidate id=K>...</candidate>`` blocks out of a prompt: ``{K: body}``."""
    return {
        int(m["id"]): m["body"]
        for m in re.finditer(r"<candidate id=(?P<id>\d+)>\n(?P<body>.*?)\n</candidate>", text, re.DOTALL)
    }
