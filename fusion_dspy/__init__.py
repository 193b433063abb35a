"""fusion-dspy: Fusion-of-N as a DSPy building block.

Sample N candidates from a pool of teacher LMs in parallel, then have a fusor LM compare them and
write one new answer (``Fuse``), or keep the best one (``mode="select"``).
"""

from __future__ import annotations

from fusion_dspy.candidate import Candidate
from fusion_dspy.config import FuseSettings
from fusion_dspy.drivers import skip_response_cache
from fusion_dspy.errors import CandidatesExhaustedError
from fusion_dspy.errors import FusionError
from fusion_dspy.errors import SelectorFailedError
from fusion_dspy.fuse import Fuse
from fusion_dspy.guard import GuardDecision
from fusion_dspy.guard import aguard_decision
from fusion_dspy.guard import guard_decision
from fusion_dspy.outcomes import TeacherTimeoutError
from fusion_dspy.prediction import FusedPrediction
from fusion_dspy.prompt import DEFAULT_FUSOR_INSTRUCTION
from fusion_dspy.prompt import FusorPrompt
from fusion_dspy.report import CandidateRecord
from fusion_dspy.report import FusionReport
from fusion_dspy.report import FusorRecord
from fusion_dspy.report import SelectionRecord
from fusion_dspy.report import TokenUsage
from fusion_dspy.teacher import Teacher

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "CandidateRecord",
    "CandidatesExhaustedError",
    "DEFAULT_FUSOR_INSTRUCTION",
    "Fuse",
    "FuseSettings",
    "FusedPrediction",
    "FusionError",
    "FusionReport",
    "FusorPrompt",
    "FusorRecord",
    "GuardDecision",
    "SelectionRecord",
    "SelectorFailedError",
    "Teacher",
    "TeacherTimeoutError",
    "TokenUsage",
    "aguard_decision",
    "guard_decision",
    "skip_response_cache",
]
