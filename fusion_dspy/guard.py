"""The selection guard: a fused answer is kept only if the Fuse's own selector ranks it first.

A fusor can write an answer worse than the best candidate it was shown (a small fusor mostly copies,
and copies the wrong parts). The guard lets the fused answer compete with the candidates under the
same selector that ``mode="select"`` would use: the fused answer joins the N candidates, the selector
ranks all N+1, and a candidate that *strictly* outranks the fused answer is returned instead. Ties
keep the fused answer.

The module is sans-I/O: :func:`guard_pool` builds the list to rank and :func:`decide` reads the
selector's verdict; running the selector (sync or async, with or without LM calls) is the caller's
job. For MBR, majority and reward selectors ranking N+1 costs no LM call, which is why the guard
is on by default for them (``Fuse(guard=None)``, decided by :meth:`fusion_dspy.FuseSettings.guard_enabled`
from the selector's ``calls_lm``) and off for an LLM judge or USC unless forced with ``guard=True``.

Example:
    >>> pool = guard_pool(candidates, fused_outputs)
    >>> decision = decide(selector.select(signature, inputs, pool), pool)
    >>> decision.kept_fused, decision.index
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from fusion_dspy.candidate import Candidate
from fusion_dspy.selectors.base import Selection

__all__ = ["FUSED_INDEX", "FUSED_TEACHER", "GuardDecision", "decide", "guard_pool"]

#: ``Candidate.index`` of the fused answer inside the guard's pool (real draws are ``0 .. n-1``).
FUSED_INDEX = -1
#: ``Candidate.teacher`` of the fused answer inside the guard's pool.
FUSED_TEACHER = "fusor"


@dataclasses.dataclass(frozen=True)
class GuardDecision:
    """What the guard decided for one call.

    Attributes:
        kept_fused: ``True`` when the fused answer was ranked first (or tied for first).
        index: ``Candidate.index`` of the returned answer: :data:`FUSED_INDEX` for the fused answer,
            otherwise the index of the winning draw.
        scores: The selector's score per ``Candidate.index`` (the fused answer under
            :data:`FUSED_INDEX`), when the selector scores; ``None`` for rank-only selectors.
        margin: Best candidate score minus the fused answer's score (positive: a candidate won),
            when scores exist.
    """

    kept_fused: bool
    index: int
    scores: dict[int, float] | None = None
    margin: float | None = None


def guard_pool(candidates: Sequence[Candidate], fused_outputs: Mapping[str, Any]) -> list[Candidate]:
    """The N+1 answers the selector ranks: the fused answer first, then the candidates in order.

    The fused answer goes first because selectors break ties towards the lower position, which makes
    ties keep the fused answer (a candidate must strictly outrank it to replace it).
    """
    fused = Candidate(index=FUSED_INDEX, teacher=FUSED_TEACHER, sample=0, outputs=dict(fused_outputs))
    return [fused, *candidates]


def decide(selection: Selection, pool: Sequence[Candidate]) -> GuardDecision:
    """Read the selector's verdict on the :func:`guard_pool` list.

    Raises:
        ValueError: ``pool`` is not a guard pool, or the selection does not fit it (position out of
            range, or a score count other than one per answer).
    """
    if not pool or pool[0].index != FUSED_INDEX:
        raise ValueError("decide() needs the list built by guard_pool(): the fused answer first.")
    if not 0 <= selection.position < len(pool):
        raise ValueError(f"The selector returned position {selection.position} for {len(pool)} answers.")
    scores = None
    margin = None
    if selection.scores is not None:
        if len(selection.scores) != len(pool):
            raise ValueError(
                f"The selector returned {len(selection.scores)} scores for {len(pool)} answers; "
                "a selector must score every answer it is given."
            )
        scores = {answer.index: float(score) for answer, score in zip(pool, selection.scores, strict=True)}
        best_other = max(float(s) for s in selection.scores[1:]) if len(pool) > 1 else float("-inf")
        margin = best_other - float(selection.scores[0])
        if margin <= 0:  # the fused answer is ranked first or tied: it stays
            return GuardDecision(kept_fused=True, index=FUSED_INDEX, scores=scores, margin=margin)
        # The scores decide: the first candidate with the best score (selectors tie towards lower positions).
        position = 1 + [float(s) for s in selection.scores[1:]].index(best_other)
        return GuardDecision(kept_fused=False, index=pool[position].index, scores=scores, margin=margin)
    chosen = pool[selection.position]
    return GuardDecision(kept_fused=chosen.index == FUSED_INDEX, index=chosen.index, scores=scores, margin=margin)
