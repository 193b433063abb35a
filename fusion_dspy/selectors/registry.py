"""Selectors by name, for saved configurations and the optimizer's search space.

A saved ``Fuse`` or an Optuna trial stores its selector as a *spec*: the registered name plus the
JSON constructor arguments (``("majority", {"fields": ["answer"]})``). :func:`selector_spec` takes
a selector apart into its spec and :func:`build_selector` builds it again, so a selector's
arguments survive ``save``/``load``.

Custom selectors opt in with :func:`register_selector` and a ``spec_args()`` method returning the
JSON keyword arguments that rebuild them::

    class LongestAnswer(Selector):
        name = "longest"

        def __init__(self, *, field: str = "answer") -> None:
            self.field = field

        def spec_args(self) -> dict[str, Any]:
            return {"field": self.field}

        def select(self, signature, inputs, candidates): ...

    register_selector(LongestAnswer)

A selector that is not registered, or has no ``spec_args``, is saved by name only; loading then
keeps the instance the Fuse was built with when the name matches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from fusion_dspy.selectors.base import Selector

__all__ = ["SELECTOR_NAMES", "build_selector", "get_selector", "register_selector", "selector_spec"]

_logger = logging.getLogger(__name__)

#: The built-in names. ``"reward"`` additionally needs ``reward_fn=`` (a Python function, never
#: saved); the others work with no arguments (``"judge"`` and ``"usc"`` then use the context LM).
SELECTOR_NAMES: tuple[str, ...] = ("mbr", "majority", "judge", "usc", "reward")

#: JSON arguments of built-in selectors that do not define ``spec_args`` themselves (attribute
#: names equal constructor arguments). LMs are never part of a spec: they resolve at call time.
_BUILTIN_ARGS: dict[str, tuple[str, ...]] = {
    "judge": ("criteria", "scale", "num_threads"),
    "usc": (),
}

_custom: dict[str, type[Selector]] = {}


def _classes() -> dict[str, type[Selector]]:
    from fusion_dspy.selectors.consistency import UniversalSelfConsistency
    from fusion_dspy.selectors.judge import LLMJudge
    from fusion_dspy.selectors.majority import MajorityVote
    from fusion_dspy.selectors.mbr import MBRSelector
    from fusion_dspy.selectors.reward import RewardSelector

    return {
        "mbr": MBRSelector,
        "majority": MajorityVote,
        "judge": LLMJudge,
        "usc": UniversalSelfConsistency,
        "reward": RewardSelector,
        **_custom,
    }


def register_selector(cls: type[Selector], *, name: str | None = None) -> type[Selector]:
    """Make ``cls`` buildable from its name (``cls.name`` unless ``name`` is given); returns ``cls``.

    Usable as a class decorator. Registering a built-in name, or one name for two classes, is refused.
    """
    from fusion_dspy.selectors.base import Selector

    if not (isinstance(cls, type) and issubclass(cls, Selector)):
        raise TypeError(f"register_selector needs a Selector subclass, got {cls!r}.")
    key = _key(name or cls.name)
    if key in SELECTOR_NAMES or (key in _custom and _custom[key] is not cls):
        raise ValueError(f"Selector name {key!r} is taken; give {cls.__name__} another `name`.")
    _custom[key] = cls
    return cls


def get_selector(name: str, **kwargs: Any) -> Selector:
    """Build a selector from its name and keyword arguments.

    Args:
        name: A registered name (case and surrounding whitespace are ignored).
        **kwargs: Passed to the selector's constructor, e.g. ``metric="chrf++"`` for ``"mbr"``,
            ``lm=...``/``scale=5`` for ``"judge"``, ``reward_fn=...`` (required) for ``"reward"``.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones), for ``"reward"``
            without ``reward_fn``, or for keyword arguments the selector does not take.
    """
    classes = _classes()
    key = _key(name)
    if key not in classes:
        raise ValueError(f"Unknown selector {name!r}; valid names are {list(classes)}.")
    if key == "reward" and kwargs.get("reward_fn") is None:
        raise ValueError(
            "Selector 'reward' needs a reward function: get_selector('reward', reward_fn=fn) with "
            "fn(inputs: dict, prediction: dspy.Prediction) -> float. It cannot be rebuilt from a name alone."
        )
    try:
        return classes[key](**kwargs)
    except TypeError as error:
        raise ValueError(f"Bad arguments for selector {key!r}: {error}") from error


def build_selector(name: str, args: Mapping[str, Any] | None = None) -> Selector:
    """Build a selector from a spec (see :func:`selector_spec`)."""
    return get_selector(name, **dict(args or {}))


def selector_spec(selector: Selector) -> tuple[str, dict[str, Any]] | tuple[str, None]:
    """The spec of ``selector``: its registered name and JSON constructor arguments.

    The arguments are ``None`` when the selector cannot be rebuilt from a spec (it is not
    registered, has no ``spec_args``, or its arguments are not JSON).
    """
    name = _key(selector.name)
    classes = _classes()
    if classes.get(name) is not type(selector):
        return name, None
    spec_args = getattr(selector, "spec_args", None)
    if callable(spec_args):
        args = spec_args()
    elif name in _BUILTIN_ARGS:
        args = {attr: getattr(selector, attr) for attr in _BUILTIN_ARGS[name]}
    else:
        return name, None
    if args is None:
        return name, None
    try:
        args = json.loads(json.dumps(args))
    except (TypeError, ValueError):
        _logger.warning("Selector %r has arguments that are not JSON; it is saved by name only.", name)
        return name, None
    return name, args


def _key(name: Any) -> str | None:
    return name.strip().lower() if isinstance(name, str) else None
