"""The selector contract: pick one candidate out of N (Best-of-N)."""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.errors import FusionError

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.candidate import Candidate

__all__ = ["Selection", "SelectionError", "Selector"]


class SelectionError(FusionError):
    """A selector could not rank any candidate (e.g. every judge call or reward call failed).

    ``errors`` maps each candidate position (or ``-1`` for a failure not tied to one candidate) to
    the exception it raised, so callers can log or re-raise the root cause.
    """

    def __init__(self, message: str, errors: Mapping[int, BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors: dict[int, BaseException] = dict(errors or {})


@dataclasses.dataclass(frozen=True)
class Selection:
    """The outcome of a selector.

    Attributes:
        position: Position of the chosen candidate in the sequence the selector was given.
        scores: One score per candidate (higher is better), when the selector scores them.
        rationale: A short explanation, when the selector produces one (LLM-based selectors).
    """

    position: int
    scores: tuple[float, ...] | None = None
    rationale: str | None = None


class Selector(abc.ABC):
    """Picks the best of several candidates for one input.

    Subclasses implement :meth:`select`; :meth:`aselect` runs it in a worker thread unless overridden.
    Selectors must be deterministic for the same inputs and candidates (ties break towards the
    lower position) so that Best-of-N results are reproducible.
    """

    #: Short stable name used in reports, saved configurations and the optimizer's search space.
    name: str = "selector"

    @abc.abstractmethod
    def select(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Selection:
        """Return the chosen candidate's position in ``candidates`` (which is never empty)."""

    async def aselect(
        self,
        signature: type[dspy.Signature],
        inputs: Mapping[str, Any],
        candidates: Sequence[Candidate],
    ) -> Selection:
        """Async :meth:`select`. By default runs it in a worker thread; ``asyncio.to_thread`` copies
        the current context, so ``dspy.context(...)`` overrides still apply there."""
        return await asyncio.to_thread(self.select, signature, inputs, candidates)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
