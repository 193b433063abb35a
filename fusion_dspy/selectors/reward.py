"""Best-of-N with a user reward function: the paper's ``argmax_y S(y, x)`` with S in Python.

The reward function has the same shape as ``dspy.BestOfN``'s ``reward_fn(args, pred)``, so rewards
written for DSPy work unchanged. Unlike ``BestOfN``, every candidate is scored (no threshold, no
early stop), and a reward that raises is recorded, never silently turned into a winner or a ``None``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.selectors._common import best_position
from fusion_dspy.selectors._common import require_candidates
from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import SelectionError
from fusion_dspy.selectors.base import Selector

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.candidate import Candidate

__all__ = ["RewardFn", "RewardSelector"]

_logger = logging.getLogger(__name__)

#: ``reward_fn(inputs, prediction) -> float``; higher is better.
RewardFn = Callable[[dict[str, Any], "dspy.Prediction"], float]


class RewardSelector(Selector):
    """Score every candidate with ``reward_fn`` and pick the highest (ties: lower position).

    A ``reward_fn`` that raises, or returns something that is not a number (``None``, NaN, a
    string), scores that candidate ``-inf``; the failure is logged and listed in
    the rationale. If it fails on every candidate, :class:`SelectionError` is raised with all errors.

    Args:
        reward_fn: ``reward_fn(inputs: dict, prediction: dspy.Prediction) -> float``. ``inputs`` is a
            fresh dict of the task inputs; ``prediction`` holds one candidate's output fields.
        calls_lm: Whether ``reward_fn`` calls an LM (e.g. an LLM rating the answer). ``False`` (a
            reward model or plain code) lets the selection guard default to on
            (:meth:`fusion_dspy.FuseSettings.guard_enabled`).

    Example:
        >>> def reward(inputs, pred):
        ...     return float(pred.answer.strip() == str(eval(inputs["expression"])))
        >>> RewardSelector(reward_fn=reward)
    """

    name = "reward"
    calls_lm = False

    def __init__(self, *, reward_fn: RewardFn, calls_lm: bool = False) -> None:
        if not isinstance(calls_lm, bool):
            raise TypeError(
                f"RewardSelector(calls_lm={calls_lm!r}) is invalid: calls_lm must be True (reward_fn calls an LM) "
                "or False."
            )
        if not callable(reward_fn):
            raise TypeError(
                f"RewardSelector(reward_fn=...) needs a callable (inputs, prediction) -> float, "
                f"got {type(reward_fn).__name__}."
            )
        self.reward_fn = reward_fn
        self.calls_lm = calls_lm

    def select(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Selection:
        import dspy

        require_candidates(candidates, self.name)
        scores: list[float] = []
        errors: dict[int, BaseException] = {}
        for position, candidate in enumerate(candidates):
            try:
                value = self.reward_fn(dict(inputs), dspy.Prediction(**dict(candidate.outputs)))
                score = _as_score(value)
            except Exception as error:
                _logger.warning(
                    "reward_fn failed on candidates[%d] (%s): %r", position, candidate.teacher, error
                )
                errors[position] = error
                score = -math.inf
            scores.append(score)

        failures = "; ".join(
            f"candidates[{p}] ({candidates[p].teacher}): {type(e).__name__}: {e}" for p, e in errors.items()
        )
        if len(errors) == len(candidates):
            raise SelectionError(
                f"reward_fn failed on all {len(candidates)} candidates: {failures}. "
                "Make reward_fn accept (inputs: dict, prediction: dspy.Prediction) and return a number.",
                errors,
            )
        position = best_position(scores)
        rationale = f"reward: candidates[{position}] has the highest reward ({scores[position]:g})"
        if errors:
            rationale += f"; reward_fn failed (scored -inf) on {failures}"
        return Selection(position=position, scores=tuple(scores), rationale=rationale)

    def __repr__(self) -> str:
        return f"RewardSelector(reward_fn={getattr(self.reward_fn, '__qualname__', self.reward_fn)!s})"


def _as_score(value: Any) -> float:
    """Coerce a reward to float; reject values that would silently corrupt the argmax."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (str, bytes, bytearray)):  # float("42") works: a reward returning an answer would rank by it
        raise TypeError(f"reward_fn returned {value!r} ({type(value).__name__}), not a number")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"reward_fn returned {value!r} ({type(value).__name__}), not a number") from None
    if math.isnan(score):
        raise ValueError("reward_fn returned NaN")
    return score
