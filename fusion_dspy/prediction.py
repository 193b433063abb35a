"""The prediction a Fuse returns: the task's output fields plus the report as ``.fusion``."""

from __future__ import annotations

from typing import Any

import dspy

from fusion_dspy.report import FusionReport

__all__ = ["FusedPrediction"]


class FusedPrediction(dspy.Prediction):
    """A ``dspy.Prediction`` whose fields are exactly the task's outputs.

    The report lives in the ``fusion`` attribute, outside the field store, so ``pred.keys()``,
    metrics and ``dspy.Evaluate`` see only the task's output fields. Copies (``copy``, ``without``)
    share it: it describes the call that produced the fields, and late answers update it in place.
    """

    #: Declared on the class so ``Example.__setattr__`` stores it as an attribute, not a field.
    fusion: FusionReport | None = None

    def copy(self, **kwargs: Any) -> FusedPrediction:
        copied = super().copy(**kwargs)
        copied.fusion = self.fusion
        return copied
