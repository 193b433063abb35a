"""Scores already measured: (configuration, example) -> score and cost, persisted beside the bank.

TPE proposes the same effective configuration more than once (categorical spaces are small, and
many parameter points collapse to one plan: N=1 only ever draws the first teacher of the pool).
The confirmation of the best trials on the full valset also re-visits examples their trials
already scored. Both are answered here without a single LM call. The memo assumes a deterministic
metric and a fusor whose answer depends only on its prompt (temperature 0, or DSPy's cache);
a new metric or valset belongs in a new study.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from fusion_dspy import TokenUsage
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import MemoryStore
from fusion_dspy.store import StoredDraw

__all__ = ["EvaluationMemo", "ExampleResult", "stable_hash"]


def stable_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys; unknown objects by ``str``)."""
    payload = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


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
    """Thread-safe memo of :class:`ExampleResult`, in memory or as JSON Lines at ``path``."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._store = MemoryStore() if path is None else JsonlStore(path)

    def get(self, config_key: str, example_key: str) -> ExampleResult | None:
        if not self.enabled:
            return None
        stored = self._store.get(f"{config_key}:{example_key}")
        if stored is None:
            return None
        return ExampleResult(score=float(stored.outputs["score"]), usage=dict(stored.usage),
                             error=stored.outputs.get("error"), memo_hit=True)

    def put(self, config_key: str, example_key: str, result: ExampleResult) -> None:
        if not self.enabled:
            return
        outputs = {"score": result.score, "error": result.error}
        self._store.put(f"{config_key}:{example_key}", StoredDraw(outputs=outputs, usage=dict(result.usage)))

    def refresh(self) -> None:
        reload = getattr(self._store, "reload", None)
        if reload is not None:
            reload()
