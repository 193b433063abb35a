"""Scores already measured: (configuration, example) -> score and cost, persisted beside the bank.

TPE proposes the same effective configuration more than once (categorical spaces are small, and
many parameter points collapse to one plan: N=1 only ever draws the first teacher of the pool).
The confirmation of the best trials on the full valset also re-visits examples their trials
already scored. Both are answered here without a single LM call. The memo assumes a deterministic
metric and a fusor whose answer depends only on its prompt (the bank keeps one reply per prompt);
a new metric or valset belongs in a new study.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping

from fusion_dspy import TokenUsage
from fusion_dspy.journal import Journal

__all__ = ["EvaluationMemo", "ExampleResult"]


@dataclasses.dataclass(frozen=True)
class ExampleResult:
    """One example evaluated under one configuration.

    Attributes:
        score: The metric's score (0 when the program raised).
        usage: Tokens per LM that this configuration's answer costs, candidates from the bank
            counted at their original cost (so a cheap-looking re-use is not mistaken for a cheap
            configuration).
        calls: LM calls actually made now (0 for a memo hit; bank hits are not calls).
        draws: New teacher generations made now.
        fusor_calls: Fusor calls made now.
        error: The program's exception, if it raised.
        memo_hit: The result came from the memo.
        uncounted_draws: Candidates whose cost is unknown: DSPy's own cache answered them, and it
            reports no usage for hits, so they count as free (see ``FusionOptimizer``).
    """

    score: float
    usage: Mapping[str, TokenUsage]
    calls: int = 0
    draws: int = 0
    fusor_calls: int = 0
    error: str | None = None
    memo_hit: bool = False
    uncounted_draws: int = 0


class EvaluationMemo:
    """Thread-safe memo of :class:`ExampleResult`, in memory or as a :class:`~fusion_dspy.journal.Journal` at ``path``.

    Each record is ``{"config": key, "example": key, "score": float, "error": str | None,
    "usage": {lm: TokenUsage}}``. :meth:`refresh` reads records other processes appended.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.journal = None if path is None else Journal(path)
        self._results: dict[tuple[str, str], ExampleResult] = {}
        self._lock = threading.Lock()
        self.refresh()

    def get(self, config_key: str, example_key: str) -> ExampleResult | None:
        if not self.enabled:
            return None
        with self._lock:
            return self._results.get((config_key, example_key))

    def put(self, config_key: str, example_key: str, result: ExampleResult) -> None:
        if not self.enabled:
            return
        remembered = ExampleResult(score=result.score, usage=dict(result.usage), error=result.error, memo_hit=True)
        with self._lock:
            if self.journal is not None:
                self.journal.append({
                    "config": config_key, "example": example_key, "score": result.score, "error": result.error,
                    "usage": {lm: used.model_dump() for lm, used in result.usage.items()},
                })
            self._results[(config_key, example_key)] = remembered

    def refresh(self) -> None:
        """Read the records other processes appended since (no-op in memory)."""
        if self.journal is None:
            return
        results = {}
        for record in self.journal.read_new():
            if "key" in record and "outputs" in record:  # Written before the memo had its own records.
                config_key, _, example_key = str(record["key"]).partition(":")
                record = {"config": config_key, "example": example_key, "usage": record.get("usage", {}),
                          **(record["outputs"] or {})}
            try:
                results[(record["config"], record["example"])] = ExampleResult(
                    score=float(record["score"]), error=record.get("error"), memo_hit=True,
                    usage={lm: TokenUsage(**used) for lm, used in record["usage"].items()},
                )
            except (KeyError, TypeError, ValueError):
                continue  # Not a memo record.
        with self._lock:
            self._results.update(results)

    def __len__(self) -> int:
        return len(self._results)
