"""The prediction a Fuse returns keeps its report through DSPy's copying helpers."""

from __future__ import annotations

from fusion_dspy.prediction import FusedPrediction
from tests.helpers import make_fuse


def test_copies_of_a_fused_prediction_keep_the_report():
    pred = make_fuse(2, mode="select")(question="q")
    assert isinstance(pred, FusedPrediction) and pred.fusion is not None
    edited = pred.copy(answer="post-processed")  # e.g. a program cleaning up the answer
    assert edited.answer == "post-processed" and pred.answer != "post-processed"
    assert edited.fusion is pred.fusion, "copy() dropped pred.fusion"
    assert pred.without("answer").fusion is pred.fusion
    assert list(edited.keys()) == ["answer"]
