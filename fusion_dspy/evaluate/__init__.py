"""Compare single samples, Best-of-N, Fusion and the oracle at equal N, with confidence intervals and costs.

The harness is task-agnostic: it takes a ``Fuse``, a metric and examples (the ready tasks in
``fusion_dspy.programs`` supply both; the ``fusion-dspy eval`` CLI wires them together).

Example:
    >>> from fusion_dspy.evaluate import Harness
    >>> report = Harness(fuse=fuse, metric=my_metric, examples=devset, ns=[1, 2, 4], out_dir="runs/x").run()
    >>> print(report.to_markdown())
"""

from __future__ import annotations

from fusion_dspy.evaluate.harness import Harness
from fusion_dspy.evaluate.harness import example_id
from fusion_dspy.evaluate.harness import example_ids
from fusion_dspy.evaluate.journal import Journal
from fusion_dspy.evaluate.report import EvalReport
from fusion_dspy.evaluate.report import MethodResult
from fusion_dspy.evaluate.report import MethodSummary
from fusion_dspy.evaluate.stats import PairedComparison
from fusion_dspy.evaluate.stats import bootstrap_ci
from fusion_dspy.evaluate.stats import paired_bootstrap
from fusion_dspy.evaluate.stats import sign_test

__all__ = [
    "EvalReport",
    "Harness",
    "Journal",
    "MethodResult",
    "MethodSummary",
    "PairedComparison",
    "bootstrap_ci",
    "example_id",
    "example_ids",
    "paired_bootstrap",
    "sign_test",
]
