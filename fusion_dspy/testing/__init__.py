"""Test utilities for users and for our own suite: an offline fake LM engine."""

from __future__ import annotations

from fusion_dspy.testing.fake_lm import FakeEngine
from fusion_dspy.testing.fake_lm import FakeLMError
from fusion_dspy.testing.fake_lm import FakeRequest

__all__ = ["FakeEngine", "FakeLMError", "FakeRequest"]
