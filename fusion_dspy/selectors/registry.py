"""Selectors by name, for saved configurations and the optimizer's search space.

A saved ``Fuse`` or an Optuna trial stores a selector as a short string (``"mbr"``) plus keyword
arguments; :func:`get_selector` turns that back into an instance. Names equal each class's
``Selector.name``, so ``get_selector(selector.name)`` round-trips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from fusion_dspy.selectors.base import Selector

__all__ = ["SELECTOR_NAMES", "get_selector"]

#: Every name :func:`get_selector` accepts. ``"reward"`` additionally needs ``reward_fn=``;
#: the others work with no arguments (``"judge"`` and ``"usc"`` then use the context LM).
SELECTOR_NAMES: tuple[str, ...] = ("mbr", "majority", "judge", "usc", "reward")


def get_selector(name: str, **kwargs: Any) -> Selector:
    """Build a selector from its name and keyword arguments.

    Args:
        name: One of :data:`SELECTOR_NAMES` (case and surrounding whitespace are ignored).
        **kwargs: Passed to the selector's constructor, e.g. ``metric="chrf++"`` for ``"mbr"``,
            ``lm=...``/``scale=5`` for ``"judge"``, ``reward_fn=...`` (required) for ``"reward"``.

    Returns:
        A new selector instance.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones), for ``"reward"``
            without ``reward_fn``, or for keyword arguments the selector does not take.
    """
    from fusion_dspy.selectors.consistency import UniversalSelfConsistency
    from fusion_dspy.selectors.judge import LLMJudge
    from fusion_dspy.selectors.majority import MajorityVote
    from fusion_dspy.selectors.mbr import MBRSelector
    from fusion_dspy.selectors.reward import RewardSelector

    classes: dict[str, type[Selector]] = {
        "mbr": MBRSelector,
        "majority": MajorityVote,
        "judge": LLMJudge,
        "usc": UniversalSelfConsistency,
        "reward": RewardSelector,
    }
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in classes:
        raise ValueError(f"Unknown selector {name!r}; valid names are {list(SELECTOR_NAMES)}.")
    if key == "reward" and kwargs.get("reward_fn") is None:
        raise ValueError(
            "Selector 'reward' needs a reward function: get_selector('reward', reward_fn=fn) with "
            "fn(inputs: dict, prediction: dspy.Prediction) -> float. It cannot be rebuilt from a name alone."
        )
    try:
        return classes[key](**kwargs)
    except TypeError as error:
        raise ValueError(f"Bad arguments for selector {key!r}: {error}") from error
