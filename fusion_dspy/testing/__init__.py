"""Test utilities for users and for our own suite.

* :class:`FakeEngine`: an offline fake LM engine (delays, failures, garbage, custom answers), and
  :class:`InFlightGauge`, the exact count of its calls in flight that concurrency tests assert.
* :class:`CandidateStoreContract` and :class:`SelectorContract`: the contracts of a candidate store
  and of a selector as pytest suites; subclass one as ``Test<YourImplementation>`` to run it
  against your own (see :mod:`fusion_dspy.testing.store_contract` and
  :mod:`fusion_dspy.testing.selector_contract`).
"""

from __future__ import annotations

from fusion_dspy.testing.fake_lm import FakeEngine
from fusion_dspy.testing.fake_lm import FakeLMError
from fusion_dspy.testing.fake_lm import FakeRequest
from fusion_dspy.testing.fake_lm import InFlightGauge
from fusion_dspy.testing.selector_contract import SelectorContract
from fusion_dspy.testing.store_contract import CandidateStoreContract

__all__ = ["CandidateStoreContract", "FakeEngine", "FakeLMError", "FakeRequest", "InFlightGauge", "SelectorContract"]
