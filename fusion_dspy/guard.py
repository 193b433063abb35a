"""The selection guard: a fused answer replaces the selector's pick only if it beats it on fair ground.

A fusor can write an answer worse than the best candidate it was shown (a small fusor mostly copies,
and copies the wrong parts). The guard makes the fused answer compete with what ``mode="select"``
would have returned, under the same selector, in two steps:

1. **The pick.** The selector ranks the N draws, as selection would: its choice is the fallback, so
   a rejected fused answer gives exactly the answer selection gives.
2. **The comparison.** The selector ranks ``[fused, pick, *references]``, where the references are
   the other draws minus the one the fused answer agrees with most (:meth:`Selector.closest
   <fusion_dspy.selectors.Selector.closest>`: its likeliest source, if that is not the pick). The
   fused answer is kept if it scores at least as well as the pick (ties keep it; a rank-only
   selector must put it first); otherwise the pick is returned. With no draw left as a reference
   (N <= 2), the two are compared head to head.

Why not simply rank all N+1 answers? Measured on WMT24 en-de (200 segments, a weak fusor that copies a
candidate verbatim on 68% of segments; ``benchmarks/guard_references.py``): the fused answer then
votes for the candidate it copied, and that vote is worse than MBR's. Ranking all N+1 scored -1.2 chrF
against MBR (95% CI [-2.8, +0.3]), and still -1.0 when the fused answer was never kept, because the
fused reference changed which candidate won. The two-step rule's fallback is MBR's own pick, and the
copy's self-match is out of the references.

The core is sans-I/O: :func:`guard_steps` yields the selector's requests (an LLM judge's calls), and
a ``Fuse`` call drives it with its own driver. To guard answers outside a ``Fuse`` (re-scoring a
journaled run, say), :func:`guard_decision` and :func:`aguard_decision` drive the same steps, sync and
async, and are exported from :mod:`fusion_dspy`.
For MBR, majority and reward selectors the guard costs no LM call, which is why it is on by default
for them (``Fuse(guard=None)``, decided by :meth:`fusion_dspy.FuseSettings.guard_enabled` from the
selector's ``calls_lm``); an LLM judge or USC pays two rankings, so it is off for them unless forced.

Example:
    >>> decision = guard_decision(MBRSelector(), signature, inputs, candidates, fused_outputs)
    >>> decision.kept_fused, decision.index, decision.pick
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.candidate import Candidate
from fusion_dspy.drivers import adrive
from fusion_dspy.drivers import drive
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import check_selection

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.drivers import Steps
    from fusion_dspy.selectors.base import Selector

__all__ = [
    "FUSED_INDEX",
    "FUSED_TEACHER",
    "GUARD_RULE",
    "GuardDecision",
    "aguard_decision",
    "comparison_pool",
    "decide",
    "fused_candidate",
    "guard_decision",
    "guard_steps",
]

#: ``Candidate.index`` of the fused answer inside the guard's pool (real draws are ``0 .. n-1``).
FUSED_INDEX = -1
#: ``Candidate.teacher`` of the fused answer inside the guard's pool.
FUSED_TEACHER = "fusor"
#: Name of the decision rule; a journal entry made under another rule is stale (the harness redoes it).
GUARD_RULE = "pick-vs-fused"


@dataclasses.dataclass(frozen=True)
class GuardDecision:
    """What the guard decided for one call.

    Attributes:
        kept_fused: ``True`` when the fused answer scored at least as well as the pick.
        index: ``Candidate.index`` of the returned answer: :data:`FUSED_INDEX` for the fused answer,
            otherwise the pick's.
        pick: ``Candidate.index`` of the selector's pick among the draws (the fallback).
        references: ``Candidate.index`` of the draws the comparison used as references.
        source: ``Candidate.index`` of the draw the fused answer agrees with most, left out of the references.
        scores: The selector's score in the comparison per ``Candidate.index`` (the fused answer under
            :data:`FUSED_INDEX`), when the selector scores; ``None`` for rank-only selectors.
        margin: The pick's score minus the fused answer's (positive: the pick won), when scores exist.
        rationale: The selector's explanation of the comparison, when it gives one, after a key to its
            positions (``[0] fused, [1] #pick (pick), [2] #reference, ...``: the selector numbers the
            answers it ranked, the other fields use ``Candidate.index``).
    """

    kept_fused: bool
    index: int
    pick: int
    references: tuple[int, ...] = ()
    source: int | None = None
    scores: dict[int, float] | None = None
    margin: float | None = None
    rationale: str | None = None


def fused_candidate(fused_outputs: Mapping[str, Any]) -> Candidate:
    """The fused answer as a :class:`~fusion_dspy.candidate.Candidate` (index :data:`FUSED_INDEX`)."""
    return Candidate(index=FUSED_INDEX, teacher=FUSED_TEACHER, sample=0, outputs=dict(fused_outputs))


def comparison_pool(fused: Candidate, pick: Candidate, references: Sequence[Candidate]) -> list[Candidate]:
    """What the selector ranks in step 2: the fused answer first, then the pick, then the references.

    The fused answer goes first because selectors break ties towards the lower position, so a
    rank-only selector that cannot tell the two apart keeps the fused answer.
    """
    if fused.index != FUSED_INDEX:
        raise ValueError(f"comparison_pool() needs the fused answer (index {FUSED_INDEX}) first, got index "
                         f"{fused.index}; build it with fused_candidate().")
    return [fused, pick, *references]


def decide(selection: Selection, pool: Sequence[Candidate], *, source: int | None = None) -> GuardDecision:
    """Read the selector's verdict on a :func:`comparison_pool` list: the fused answer or the pick.

    Raises:
        ValueError: ``pool`` is not a comparison pool, or the selection does not fit it (position out
            of range, or a score count other than one per answer).
    """
    if len(pool) < 2 or pool[0].index != FUSED_INDEX:
        raise ValueError("decide() needs the list built by comparison_pool(): the fused answer, then the pick.")
    if not 0 <= selection.position < len(pool):
        raise ValueError(f"The selector returned position {selection.position} for {len(pool)} answers.")
    pick, references = pool[1].index, tuple(c.index for c in pool[2:])
    rationale = _keyed(selection.rationale, pick, references)
    if selection.scores is None:  # rank-only: the fused answer must be ranked first
        kept = selection.position == 0
        return GuardDecision(kept_fused=kept, index=FUSED_INDEX if kept else pick, pick=pick,
                             references=references, source=source, rationale=rationale)
    if len(selection.scores) != len(pool):
        raise ValueError(
            f"The selector returned {len(selection.scores)} scores for {len(pool)} answers; "
            "a selector must score every answer it is given."
        )
    scores = {answer.index: float(score) for answer, score in zip(pool, selection.scores, strict=True)}
    fused_score, pick_score = scores[FUSED_INDEX], scores[pick]
    # Ties keep the fused answer, equal infinities included (inf - inf is NaN, not a tie); a NaN score never wins.
    kept = fused_score >= pick_score
    margin = 0.0 if fused_score == pick_score else pick_score - fused_score
    return GuardDecision(kept_fused=kept, index=FUSED_INDEX if kept else pick, pick=pick, references=references,
                         source=source, scores=scores, margin=margin, rationale=rationale)


def _keyed(rationale: str | None, pick: int, references: Sequence[int]) -> str | None:
    """The selector's rationale after a key from its positions in the comparison pool to ``Candidate.index``."""
    if not rationale:
        return rationale
    key = ", ".join(["[0] fused", f"[1] #{pick} (pick)", *(f"[{p}] #{i}" for p, i in enumerate(references, start=2))])
    return f"comparison positions: {key} | {rationale}"


def guard_steps(
    selector: Selector,
    signature: type[dspy.Signature],
    inputs: Mapping[str, Any],
    candidates: Sequence[Candidate],
    fused_outputs: Mapping[str, Any],
) -> Steps[GuardDecision]:
    """The guard for one fused answer, as sans-I/O steps: the pick, then the comparison.

    Args:
        selector: The Fuse's selector; its own steps run inside these (an LLM judge's calls are yielded).
        signature: The task signature.
        inputs: The task inputs.
        candidates: The N successful draws (never empty).
        fused_outputs: The fused answer's output fields.

    Raises:
        ValueError: ``candidates`` is empty, two of them share a ``Candidate.index`` (or one has
            :data:`FUSED_INDEX`), or a selection does not fit what it ranked.
    """
    if not candidates:
        raise ValueError("guard_steps() needs at least one candidate to compare the fused answer with.")
    indexes = [c.index for c in candidates]
    if len(set(indexes)) != len(indexes) or FUSED_INDEX in indexes:
        raise ValueError(
            f"guard_steps() tells answers apart by Candidate.index, but the candidates have indexes {indexes}; "
            f"give each candidate its own index (its draw's position, 0..n-1), never {FUSED_INDEX} (the fused answer)."
        )
    pick = yield from selector.steps(signature, inputs, candidates)
    check_selection(pick, len(candidates), selector.name)
    chosen = candidates[pick.position]
    fused = fused_candidate(fused_outputs)
    source = candidates[selector.closest(signature, fused, candidates)].index
    references = [c for c in candidates if c.index not in (chosen.index, source)]
    pool = comparison_pool(fused, chosen, references)
    selection = yield from selector.steps(signature, inputs, pool)
    check_selection(selection, len(pool), selector.name)
    return decide(selection, pool, source=source)


def guard_decision(
    selector: Selector,
    signature: type[dspy.Signature],
    inputs: Mapping[str, Any],
    candidates: Sequence[Candidate],
    fused_outputs: Mapping[str, Any],
) -> GuardDecision:
    """The guard's decision on one fused answer, run synchronously (arguments as :func:`guard_steps`).

    An LLM judge's calls are made here, under the current ``dspy.settings``; MBR, majority and reward
    selectors make none.
    """
    return drive(guard_steps(selector, signature, inputs, candidates, fused_outputs))


async def aguard_decision(
    selector: Selector,
    signature: type[dspy.Signature],
    inputs: Mapping[str, Any],
    candidates: Sequence[Candidate],
    fused_outputs: Mapping[str, Any],
) -> GuardDecision:
    """:func:`guard_decision` for async code: the same steps, with an LLM judge's calls awaited."""
    return await adrive(guard_steps(selector, signature, inputs, candidates, fused_outputs))
