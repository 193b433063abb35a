"""Minimum Bayes risk selection: the candidate that agrees most with all the others.

MBR treats the other candidates as pseudo-references and picks the one with the highest expected
utility against them (paper §6; also the "X-MBR" line of work the FusioN authors build on). It
needs no LM call and no reward model, so it is the cheap, deterministic default and the fallback
of the LLM-based selectors. Utility is sentence-level chrF from sacrebleu, which works on any
language and on structured outputs rendered as text.

Cost bound: chrF is linear in the text length, and MBR compares every pair, so N candidates of L
characters cost O(N² · L). A text longer than ``max_chars`` (default :data:`MBR_MAX_CHARS`, 10,000
characters: far above an ordinary answer, whose score is therefore exact) is scored on an excerpt
of ``max_chars`` characters: :data:`MBR_EXCERPTS` equal windows spread evenly from its start to its
end (the head and the tail included). Every text is excerpted the same way, so long candidates are
compared on the same relative regions, and the cost becomes O(N² · max_chars) whatever L is: three
1 MB candidates take about as long as three 10 kB ones (well under a second).
"""

from __future__ import annotations

import functools
import logging
import math
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

__all__ = ["MBR_EXCERPTS", "MBR_MAX_CHARS", "MBR_METRICS", "MBRSelector", "closest_text", "excerpt", "mbr_scores"]

_logger = logging.getLogger(__name__)

#: Supported utility metrics: chrF (character n-grams) and chrF++ (plus word bigrams).
MBR_METRICS: tuple[str, ...] = ("chrf", "chrf++")
#: Longest text scored whole; a longer one is scored on an excerpt of this many characters.
MBR_MAX_CHARS = 10_000
#: Number of evenly spread windows an excerpt is made of.
MBR_EXCERPTS = 5


def excerpt(text: str, max_chars: int | None = MBR_MAX_CHARS) -> str:
    """``text`` itself if it has at most ``max_chars`` characters, else :data:`MBR_EXCERPTS` equal
    windows of it, spread evenly from start to end, joined by newlines (``max_chars`` in total)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    windows = MBR_EXCERPTS
    width = max(1, (max_chars - (windows - 1)) // windows)
    step = (len(text) - width) / (windows - 1)
    return "\n".join(text[round(k * step) : round(k * step) + width] for k in range(windows))


def mbr_scores(
    texts: Sequence[str], *, metric: str = "chrf", max_chars: int | None = MBR_MAX_CHARS
) -> list[float]:
    """Each text's mean sentence-level utility against every other text (0..100, higher is better).

    ``score[i] = mean_{j != i} metric(hypothesis=texts[i], reference=texts[j])``. chrF is not
    symmetric (it weights recall twice as much as precision), so both directions are computed.

    Args:
        texts: The candidates as plain text.
        metric: ``"chrf"`` or ``"chrf++"`` (``sacrebleu.metrics.CHRF`` with ``word_order=2``).
        max_chars: Texts longer than this are scored on an :func:`excerpt` (the module's cost
            bound); ``None`` scores whole texts however long.

    Returns:
        One score per text; ``[100.0]`` for a single text (it agrees with itself), ``[]`` for none.
    """
    _check_max_chars(max_chars)
    count = len(texts)
    if count <= 1:
        return [100.0] * count
    scorer = _PairScorer(metric)
    texts = [excerpt(text, max_chars) for text in texts]
    cache: dict[tuple[str, str], float] = {}
    scores = []
    for i, hypothesis in enumerate(texts):
        utilities = []
        for j, reference in enumerate(texts):
            if i == j:
                continue
            key = (hypothesis, reference)
            if key not in cache:
                cache[key] = scorer.score(hypothesis, reference)
            utilities.append(cache[key])
        # fsum is exactly rounded, so the order of the terms cannot matter: two verbatim copies (which
        # see the same utilities in another order) score exactly alike and tie to the lower position.
        scores.append(math.fsum(utilities) / (count - 1))
    return scores


def closest_text(
    target: str, texts: Sequence[str], *, metric: str = "chrf", max_chars: int | None = MBR_MAX_CHARS
) -> int:
    """Position of the text in ``texts`` that ``target`` agrees with most (its likeliest source).

    Agreement is MBR's utility in MBR's direction: ``metric(hypothesis=target, reference=texts[i])``,
    so "the text ``target`` would count most on as a pseudo-reference". Ties go to the lowest position.

    Raises:
        ValueError: ``texts`` is empty.
    """
    if not texts:
        raise ValueError("closest_text() needs at least one text to compare with, got none.")
    _check_max_chars(max_chars)
    scorer = _PairScorer(metric)
    hypothesis = excerpt(target, max_chars)
    return best_position([scorer.score(hypothesis, excerpt(text, max_chars)) for text in texts])


class MBRSelector(Selector):
    """Pick the candidate with the highest mean chrF against all other candidates.

    Args:
        metric: ``"chrf"`` (default) or ``"chrf++"``.
        max_chars: Longest candidate text scored whole; longer ones are scored on an evenly spread
            excerpt of this many characters, which bounds the cost (see the module docs).
            ``None``: no bound.

    Example:
        >>> selector = MBRSelector(metric="chrf++")
        >>> selection = selector.select(MySignature, {"question": "..."}, candidates)
        >>> candidates[selection.position]
    """

    name = "mbr"
    calls_lm = False

    def __init__(self, *, metric: str = "chrf", max_chars: int | None = MBR_MAX_CHARS) -> None:
        _check_metric(metric)
        _check_max_chars(max_chars)
        self.metric = metric
        self.max_chars = max_chars

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
        scores = mbr_scores(texts, metric=self.metric, max_chars=self.max_chars)
        position = best_position(scores)
        _logger.debug("mbr scores %s -> position %d", scores, position)
        rationale = (
            f"mbr: candidates[{position}] has the highest mean {self.metric} "
            f"({scores[position]:.2f}) against the other {len(candidates) - 1} candidates"
        )
        return Selection(position=position, scores=tuple(scores), rationale=rationale)

    def spec_args(self) -> dict[str, Any]:
        """The JSON constructor arguments (see :func:`fusion_dspy.selectors.selector_spec`); ``max_chars``
        only when it is not the default, so specs saved before it existed stay the same."""
        args: dict[str, Any] = {"metric": self.metric}
        if self.max_chars != MBR_MAX_CHARS:
            args["max_chars"] = self.max_chars
        return args

    def __repr__(self) -> str:
        bound = "" if self.max_chars == MBR_MAX_CHARS else f", max_chars={self.max_chars!r}"
        return f"MBRSelector(metric={self.metric!r}{bound})"


def _check_metric(metric: str) -> None:
    if metric not in MBR_METRICS:
        raise ValueError(f"Unknown MBR metric {metric!r}; use one of {list(MBR_METRICS)}.")


def _check_max_chars(max_chars: int | None) -> None:
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 100):
        raise ValueError(
            f"MBR max_chars must be an integer >= 100 (characters scored per candidate) or None, got {max_chars!r}."
        )


def _make_scorer(metric: str) -> Any:
    _check_metric(metric)
    from sacrebleu.metrics import CHRF  # lazy: sacrebleu pulls in regex/numpy at import time

    return CHRF(word_order=2 if metric == "chrf++" else 0)


class _PairScorer:
    """Sentence-level chrF of many pairs over few texts, each text's n-grams extracted once.

    ``CHRF.sentence_score`` extracts both texts' n-grams on every call, so MBR over N texts extracts
    each one 2(N-1) times; this extracts each once and runs sacrebleu's own match statistics and
    F-score on the cached n-grams, which gives the same float. Those are sacrebleu's internal
    methods: :func:`_fast_path_works` checks them once per process against ``sentence_score`` and,
    if they are missing or disagree (another sacrebleu), every pair goes through ``sentence_score``.
    """

    def __init__(self, metric: str) -> None:
        self.scorer = _make_scorer(metric)
        self.fast = _fast_path_works(metric)
        self._ngrams: dict[str, list[Any]] = {}

    def score(self, hypothesis: str, reference: str) -> float:
        """``CHRF.sentence_score(hypothesis, [reference]).score``."""
        if not self.fast:
            return float(self.scorer.sentence_score(hypothesis, [reference]).score)
        stats: list[int] = []
        for hyp, ref in zip(self._ngrams_of(hypothesis), self._ngrams_of(reference), strict=True):
            stats.extend(self.scorer._get_match_statistics(hyp, ref))
        return float(self.scorer._compute_f_score(stats))

    def _ngrams_of(self, text: str) -> list[Any]:
        ngrams = self._ngrams.get(text)
        if ngrams is None:
            segment = self.scorer._preprocess_segment(text)
            ngrams = self._ngrams[text] = self.scorer._extract_reference_info([segment])["ref_ngrams"][0]
        return ngrams


@functools.cache
def _fast_path_works(metric: str) -> bool:
    """Whether :class:`_PairScorer`'s cached path gives ``sentence_score``'s floats with this sacrebleu."""
    probes = [("Der Hund (bellt) laut.", "Der Hund bellt, laut!"), ("a", ""), ("", "b c"), ("Ça va ?", "ça  va")]
    try:
        fast = _PairScorer.__new__(_PairScorer)
        fast.scorer, fast.fast, fast._ngrams = _make_scorer(metric), True, {}
        agree = all(fast.score(h, r) == float(fast.scorer.sentence_score(h, [r]).score) for h, r in probes)
    except (AttributeError, TypeError, KeyError, ValueError, IndexError):
        agree = False
    if not agree:
        _logger.info("sacrebleu's internal chrF statistics differ from this library's expectation; MBR uses "
                     "sentence_score for every pair (slower, same results).")
    return agree
