"""Best-of-N selectors: pick one of N candidates instead of fusing them.

Every selector implements :class:`Selector` (``select(signature, inputs, candidates) -> Selection``)
and is deterministic for the same inputs, breaking ties towards the lower position.

* :class:`MBRSelector` (``"mbr"``): highest mean chrF against the other candidates; no LM call.
* :class:`MajorityVote` (``"majority"``): most common normalized answer; MBR breaks ties.
* :class:`LLMJudge` (``"judge"``): an LM rates each candidate 1..scale, concurrently.
* :class:`UniversalSelfConsistency` (``"usc"``): one LM call picks the most consistent candidate.
* :class:`RewardSelector` (``"reward"``): a Python ``reward_fn(inputs, prediction)`` scores each one.

:func:`get_selector` builds one from its name; :func:`selector_spec` / :func:`build_selector` take a
selector apart into (name, JSON arguments) and back, for saved configurations and search spaces;
:func:`register_selector` makes a custom selector buildable by name.
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
from fusion_dspy.selectors.registry import build_selector
from fusion_dspy.selectors.registry import get_selector
from fusion_dspy.selectors.registry import register_selector
from fusion_dspy.selectors.registry import selector_spec
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
    "build_selector",
    "get_selector",
    "mbr_scores",
    "register_selector",
    "selector_spec",
]
