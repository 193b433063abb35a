"""Majority vote over normalized answers (self-consistency), with MBR to break ties.

Voting is the strongest cheap selector when answers are short and checkable (math, multiple choice,
classification), which is where the paper saw FusioN lose to selection (MGSM). Answers are compared
after :func:`fusion_dspy.normalize.answer_key`, so ``"Paris."`` and ``"paris"`` or ``42`` and
``"42.0"`` count as one vote.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.normalize import answer_key
from fusion_dspy.selectors._common import candidate_texts
from fusion_dspy.selectors._common import output_fields
from fusion_dspy.selectors._common import require_candidates
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import Selector
from fusion_dspy.selectors.mbr import mbr_scores

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.candidate import Candidate

__all__ = ["MajorityVote"]

_logger = logging.getLogger(__name__)


class MajorityVote(Selector):
    """Pick a candidate whose normalized answer most candidates share.

    Candidates vote for the answer key of ``fields``; an empty answer (``None``, ``""``, only
    punctuation: empty once normalized) abstains, unless every answer is empty. The winning group is the
    one with most votes;
    when several groups tie, the group whose members agree most with the whole pool (mean MBR chrF,
    computed over all output fields of all candidates) wins, then the group seen first. The chosen
    candidate is the winning group's first member (lowest position).

    ``Selection.scores`` holds each candidate's vote share (its group's size / N; 0 for an abstention).

    Args:
        fields: Output fields that make up the answer (e.g. ``["answer"]`` to ignore a ``reasoning``
            field). ``None`` uses every output field of the task signature.
    """

    name = "majority"
    calls_lm = False

    def __init__(self, *, fields: Sequence[str] | None = None) -> None:
        if isinstance(fields, str):
            fields = [fields]
        if fields is not None and not fields:
            raise ValueError("MajorityVote(fields=...) needs at least one field name, or None for all.")
        self.fields: tuple[str, ...] | None = tuple(fields) if fields is not None else None

    def select(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Selection:
        require_candidates(candidates, self.name)
        all_fields = output_fields(signature, candidates)
        vote_fields = self.fields or all_fields
        groups: dict[tuple[str, ...], list[int]] = {}
        for position, candidate in enumerate(candidates):
            groups.setdefault(answer_key(candidate.outputs, vote_fields), []).append(position)
        # An empty answer is no vote: two teachers that said nothing must not outvote one that answered.
        empty = ("",) * len(vote_fields)
        voting = {key: members for key, members in groups.items() if key != empty} or groups

        total = len(candidates)
        top = max(len(members) for members in voting.values())
        tied = [key for key, members in voting.items() if len(members) == top]  # in first-seen order
        winner = tied[0]
        how = ""
        if len(tied) > 1:
            agreement = mbr_scores(candidate_texts(candidates, all_fields))
            group_score = {key: sum(agreement[p] for p in groups[key]) / top for key in tied}
            winner = max(tied, key=lambda key: group_score[key])  # max() keeps the first of equals
            how = (
                f"; {len(tied)} answers tied, broken by mean chrF against the pool "
                f"({group_score[winner]:.2f} for the winner)"
            )
        position = groups[winner][0]
        shares = [0.0] * total
        for members in voting.values():
            for member in members:
                shares[member] = len(members) / total
        _logger.debug("majority groups %s -> position %d", groups, position)
        shown = ", ".join(repr(value[:60]) for value in winner)
        rationale = f"majority: {top}/{total} votes for {shown} (candidates {groups[winner]}){how}"
        return Selection(position=position, scores=tuple(shares), rationale=rationale)

    def closest(
        self,
        signature: type[dspy.Signature],
        answer: Candidate,
        candidates: Sequence[Candidate],
    ) -> int:
        """The candidate ``answer`` was most likely copied from: among those with its answer key (on the
        vote fields), the closest by chrF over all output fields; without any, the closest of all."""
        vote_fields = self.fields or output_fields(signature, candidates)
        key = answer_key(answer.outputs, vote_fields)
        same = [p for p, c in enumerate(candidates) if answer_key(c.outputs, vote_fields) == key]
        if not same:
            return super().closest(signature, answer, candidates)
        return same[super().closest(signature, answer, [candidates[p] for p in same])]

    def spec_args(self) -> dict[str, Any]:
        """The JSON constructor arguments (see :func:`fusion_dspy.selectors.selector_spec`)."""
        return {"fields": list(self.fields) if self.fields is not None else None}

    def __repr__(self) -> str:
        return f"MajorityVote(fields={list(self.fields) if self.fields else None!r})"
