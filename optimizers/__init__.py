"""Tune Fusion-of-N with Optuna: N, teacher pool, temperatures, fusor, mode and fusor prompt per Fuse.

Example:
    >>> from fusion_dspy.optimizers import FusionOptimizer, SearchSpace
    >>> opt = FusionOptimizer(metric=exact_match, teachers=pool, fusors=[big, small], trials=40,
    ...                       storage="sqlite:///study.db", study_name="qa", objectives=("quality", "cost"))
    >>> compiled = opt.compile(program, trainset=train, valset=dev)
    >>> cheap = opt.select_from_front(max_cost=2_000)
"""

from __future__ import annotations

from fusion_dspy.optimizers.bank import BankStats
from fusion_dspy.optimizers.bank import CandidateBank
from fusion_dspy.optimizers.cost import CostModel
from fusion_dspy.optimizers.cost import Price
from fusion_dspy.optimizers.front import FrontPoint
from fusion_dspy.optimizers.front import pareto_front
from fusion_dspy.optimizers.front import select_from_front
from fusion_dspy.optimizers.fuses import apply_settings
from fusion_dspy.optimizers.fuses import find_fuses
from fusion_dspy.optimizers.loading import load_compiled
from fusion_dspy.optimizers.memo import EvaluationMemo
from fusion_dspy.optimizers.optimizer import FusionOptimizer
from fusion_dspy.optimizers.optimizer import trial_logs
from fusion_dspy.optimizers.options import Budget
from fusion_dspy.optimizers.options import Parallelism
from fusion_dspy.optimizers.options import Proposals
from fusion_dspy.optimizers.options import Storage
from fusion_dspy.optimizers.proposer import InstructionProposer
from fusion_dspy.optimizers.reporting import StudyReport
from fusion_dspy.optimizers.reporting import build_report
from fusion_dspy.optimizers.search_space import SearchSpace
from fusion_dspy.optimizers.search_space import variant_name

__all__ = [
    "BankStats",
    "Budget",
    "CandidateBank",
    "CostModel",
    "EvaluationMemo",
    "FrontPoint",
    "FusionOptimizer",
    "InstructionProposer",
    "Parallelism",
    "Price",
    "Proposals",
    "SearchSpace",
    "Storage",
    "StudyReport",
    "apply_settings",
    "build_report",
    "find_fuses",
    "load_compiled",
    "pareto_front",
    "select_from_front",
    "trial_logs",
    "variant_name",
]
