"""Agreement among candidates, for ``mode="auto"``: skip the fusor when the answer is settled."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

from fusion_dspy.candidate import Candidate
from fusion_dspy.normalize import answer_key

__all__ = ["Consensus", "find_consensus"]


@dataclasses.dataclass(frozen=True)
class Consensus:
    """The most common normalized answer: its share of the candidates and its first member."""

    share: float
    position: int


def find_consensus(candidates: Sequence[Candidate], fields: Sequence[str]) -> Consensus:
    """The largest group of candidates with the same normalized ``fields``.

    Ties go to the group whose first member comes first, so the result is deterministic. Empty answers
    (empty once normalized) agree on nothing, as in majority vote: they count only when every answer is
    empty, so four teachers that answered nothing never settle a question the fifth answered.
    """
    if not candidates:
        raise ValueError("find_consensus needs at least one candidate.")
    keys = [answer_key(c.outputs, fields) for c in candidates]
    empty = ("",) * len(keys[0])
    counts = collections.Counter(key for key in keys if key != empty) or collections.Counter(keys)
    best = max(counts.items(), key=lambda item: (item[1], -keys.index(item[0])))[0]
    return Consensus(share=counts[best] / len(candidates), position=keys.index(best))
