"""Minimum Bayes risk selection: the candidate that agrees most with all the others.

MBR treats the other candidates as pseudo-references and picks the one with the highest expected
utility against them (paper §6; also the "X-MBR" line of work the FusioN authors build on). It
needs no LM call and no reward model, so it is the cheap, deterministic default and the fallback
of the LLM-based selectors. Utility is sentence-level chrF from sacrebleu, which works on any
language and on structured outputs rendered as text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.selectors._common import best_position
from fusion_dspy.selectors._common import candidate_texts
from fusion_dspy.selectors._common import output_fields
from fusion_dspy.selectors._common import require_candidates
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import Selector

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.candidate import Candidate

__all__ = ["MBR_METRICS", "MBRSelector", "mbr_scores"]

_logger = logging.getLogger(__name__)

#: Supported utility metrics: chrF (character n-grams) and chrF++ (plus word bigrams).
MBR_METRICS: tuple[str, ...] = ("chrf", "chrf++")


def mbr_scores(texts: Sequence[str], *, metric: str = "chrf") -> list[float]:
    """Each text's mean sentence-level utility against every other text (0..100, higher is better).

    ``score[i] = mean_{j != i} metric(hypothesis=texts[i], reference=texts[j])``. chrF is not
    symmetric (it weights recall twice as much as precision), so both directions are computed.

    Args:
        texts: The candidates as plain text.
        metric: ``"chrf"`` or ``"chrf++"`` (``sacrebleu.metrics.CHRF`` with ``word_order=2``).

    Returns:
        One score per text; ``[100.0]`` for a single text (it agrees with itself), ``[]`` for none.
    """
    scorer = _make_scorer(metric)
    count = len(texts)
    if count <= 1:
        return [100.0] * count
    cache: dict[tuple[str, str], float] = {}
    scores = []
    for i, hypothesis in enumerate(texts):
        total = 0.0
        for j, reference in enumerate(texts):
            if i == j:
                continue
            key = (hypothesis, reference)
            if key not in cache:
                cache[key] = scorer.sentence_score(hypothesis, [reference]).score
            total += cache[key]
        scores.append(total / (count - 1))
    return scores


class MBRSelector(Selector):
    """Pick the candidate with the highest mean chrF against all other candidates.

    Args:
        metric: ``"chrf"`` (default) or ``"chrf++"``.

    Example:
        >>> selector = MBRSelector(metric="chrf++")
        >>> selection = selector.select(MySignature, {"question": "..."}, candidates)
        >>> candidates[selection.position]
    """

    name = "mbr"

    def __init__(self, *, metric: str = "chrf") -> None:
        _check_metric(metric)
        self.metric = metric

    def select(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Selection:
        require_candidates(candidates, self.name)
        if len(candidates) == 1:
            return Selection(position=0, scores=(100.0,), rationale="mbr: only one candidate")
        texts = candidate_texts(candidates, output_fields(signature, candidates))
        scores = mbr_scores(texts, metric=self.metric)
        position = best_position(scores)
        _logger.debug("mbr scores %s -> position %d", scores, position)
        rationale = (
            f"mbr: candidates[{position}] has the highest mean {self.metric} "
            f"({scores[position]:.2f}) against the other {len(candidates) - 1} candidates"
        )
        return Selection(position=position, scores=tuple(scores), rationale=rationale)

    def __repr__(self) -> str:
        return f"MBRSelector(metric={self.metric!r})"


def _check_metric(metric: str) -> None:
    if metric not in MBR_METRICS:
        raise ValueError(f"Unknown MBR metric {metric!r}; use one of {list(MBR_METRICS)}.")


def _make_scorer(metric: str) -> Any:
    _check_metric(metric)
    from sacrebleu.metrics import CHRF  # lazy: sacrebleu pulls in regex/numpy at import time

    return CHRF(word_order=2 if metric == "chrf++" else 0)
