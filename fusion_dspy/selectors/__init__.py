"""Best-of-N selectors: pick one of N candidates instead of fusing them.

Every selector implements :class:`Selector` (``select(signature, inputs, candidates) -> Selection``)
and is deterministic for the same inputs, breaking ties towards the lower position.

* :class:`MBRSelector` (``"mbr"``): highest mean chrF against the other candidates; no LM call.
* :class:`MajorityVote` (``"majority"``): most common normalized answer; MBR breaks ties.
* :class:`LLMJudge` (``"judge"``): an LM rates each candidate 1..scale, concurrently.
* :class:`UniversalSelfConsistency` (``"usc"``): one LM call picks the most consistent candidate.
* :class:`RewardSelector` (``"reward"``): a Python ``reward_fn(inputs, prediction)`` scores each one.

:func:`get_selector` builds one from its name, for saved configurations and search spaces.
"""

from __future__ import annotations

from fusion_dspy.selectors.base import Selection
from fusion_dspy.selectors.base import SelectionError
from fusion_dspy.selectors.base import Selector
from fusion_dspy.selectors.consistency import UniversalSelfConsistency
from fusion_dspy.selectors.judge import LLMJudge
from fusion_dspy.selectors.majority import MajorityVote
from fusion_dspy.selectors.mbr import MBR_METRICS
from fusion_dspy.selectors.mbr import MBRSelector
from fusion_dspy.selectors.mbr import mbr_scores
from fusion_dspy.selectors.registry import SELECTOR_NAMES
from fusion_dspy.selectors.registry import get_selector
from fusion_dspy.selectors.reward import RewardFn
from fusion_dspy.selectors.reward import RewardSelector

__all__ = [
    "LLMJudge",
    "MBR_METRICS",
    "MBRSelector",
    "MajorityVote",
    "RewardFn",
    "RewardSelector",
    "SELECTOR_NAMES",
    "Selection",
    "SelectionError",
    "Selector",
    "UniversalSelfConsistency",
    "get_selector",
    "mbr_scores",
]
