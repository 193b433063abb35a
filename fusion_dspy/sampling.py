"""Compatibility module: the names that used to live here, re-exported from their homes.

The requests and drivers are in :mod:`fusion_dspy.drivers` (which also states the timeout and bounds
model), the per-LM bounds and the LM clock in :mod:`fusion_dspy.lm_slots`, the elastic thread pool,
context carrying and :func:`run_threads` in :mod:`fusion_dspy.threads`, and the call outcomes
(:class:`Tracked`, :class:`DrawOutcome`, :class:`TeacherTimeoutError`) in :mod:`fusion_dspy.outcomes`.
New code imports from those modules.
"""

from __future__ import annotations

from fusion_dspy.drivers import Batch
from fusion_dspy.drivers import Invoke
from fusion_dspy.drivers import LMCall
from fusion_dspy.drivers import Request
from fusion_dspy.drivers import Stepper
from fusion_dspy.drivers import Steps as Steps  # not in __all__, importable as before
from fusion_dspy.drivers import adrive
from fusion_dspy.drivers import drive
from fusion_dspy.lm_slots import DEFAULT_LM_CONCURRENCY
from fusion_dspy.lm_slots import lm_concurrency
from fusion_dspy.lm_slots import set_lm_concurrency
from fusion_dspy.outcomes import DrawOutcome
from fusion_dspy.outcomes import TeacherTimeoutError
from fusion_dspy.outcomes import Tracked
from fusion_dspy.outcomes import merge_into_parent_tracker
from fusion_dspy.outcomes import tracked
from fusion_dspy.threads import IDLE_THREAD_S
from fusion_dspy.threads import apply_context
from fusion_dspy.threads import bind_context
from fusion_dspy.threads import capture_context
from fusion_dspy.threads import run_threads

__all__ = [
    "DEFAULT_LM_CONCURRENCY",
    "IDLE_THREAD_S",
    "Batch",
    "DrawOutcome",
    "Invoke",
    "LMCall",
    "Request",
    "Stepper",
    "TeacherTimeoutError",
    "Tracked",
    "adrive",
    "apply_context",
    "bind_context",
    "capture_context",
    "drive",
    "lm_concurrency",
    "merge_into_parent_tracker",
    "run_threads",
    "set_lm_concurrency",
    "tracked",
]
