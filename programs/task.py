"""``TaskSpec``: what the evaluation CLI needs to know about one ready program."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import dspy

__all__ = ["TaskSpec"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: its signature, how to score it, and how to load it.

    The evaluation harness is task-agnostic (it takes a metric and examples); the CLI looks a task up
    by name in :data:`fusion_dspy.programs.TASKS` and wires these pieces into it.

    Attributes:
        name: The CLI name (``--task``).
        signature: The task signature a ``Fuse`` is built on.
        metric: ``metric(example, prediction, trace=None) -> float``, higher is better.
        metric_name: How reports label the metric (``"chrF"``, ``"exact match"``...).
        load: ``load(data, *, limit=None) -> list[dspy.Example]``; ``data`` is a file, a directory, a hub
            name, or ``None`` for the project's data directory.
        selectors: Best-of-N selectors that make sense for the task, by name (the harness runs each).
        corpus_metric: Optional ``corpus_metric(examples, predictions) -> float`` (e.g. corpus chrF),
            reported next to the mean of the per-example metric.
        answer_fields: Output fields that carry the answer (for majority voting); ``None`` means all.
    """

    name: str
    signature: type[dspy.Signature]
    metric: Callable[..., float]
    metric_name: str
    load: Callable[..., list[dspy.Example]]
    selectors: tuple[str, ...] = ("mbr",)
    corpus_metric: Callable[[Sequence[dspy.Example], Sequence[Any]], float] | None = None
    answer_fields: tuple[str, ...] | None = None
