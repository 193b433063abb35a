"""The evaluation harness's resume log: a :class:`fusion_dspy.journal.Journal` (one format, one policy).

Kept as an import path for the harness and synth; see :mod:`fusion_dspy.journal` for the write
discipline and the torn-tail policy.
"""

from __future__ import annotations

from fusion_dspy.journal import Journal

__all__ = ["Journal"]
