"""The options of a Ray Data run, shared by :func:`~fusion_dspy.synth.ray.synthesize_ray` and
:func:`~fusion_dspy.evaluate.ray.run_harness_ray`: one frozen, validated value.

Every rule on a Ray option is declared here, on a field of :class:`RayOptions`, and a bad value
raises :class:`~fusion_dspy.config.SettingsError` naming the field and saying what to pass. This
module never imports Ray (the options are built, checked and printed without it installed).

Example:
    >>> from fusion_dspy.ray_options import RayOptions
    >>> options = RayOptions(address="auto", actors=4, concurrency=16)
    >>> synthesize_ray(make_fuse, prompts, "ds/", ray=options)
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from pydantic import field_validator

from fusion_dspy.config import SettingsError
from fusion_dspy.config import explain

__all__ = ["RayOptions"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})")


class RayOptions(BaseModel):
    """Where and how wide a Ray Data run is: the cluster address, the actor pool and its batches.

    Attributes:
        address: ``None`` or ``"local"`` (the running Ray runtime, or a new local one; ``"local"`` is
            stored as ``None``), ``"auto"`` (the cluster this node belongs to), ``"ray://<head>:10001"``
            (a remote cluster through Ray Client) or ``"<host>:<port>"`` (a cluster's GCS address).
        actors: Actors in the pool; each builds its own Fuse (or harness) and LMs once.
        concurrency: Items (prompts or examples) in flight per actor, as threads.
        batch_size: Items per batch handed to an actor (``None``: ``concurrency``).
        actor_cpus: CPUs Ray reserves per actor (the actors mostly wait on LMs: fractions are fine).

    Build it with keywords (``RayOptions(actors=4)``); change it with :meth:`replaced`, which
    validates the whole again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(
        default=None, strict=True,
        description="address must be None or 'local' (the running Ray runtime, or a new local one), 'auto' (this "
        "node's cluster), 'ray://<head>:10001' (a remote cluster) or '<host>:<port>'; e.g. address='auto' "
        "(--ray on the command line).",
    )
    actors: int = Field(
        default=2, ge=1, strict=True,
        description="actors must be an int >= 1: the actors in the Ray pool, e.g. actors=4 (--actors on the "
        "command line).",
    )
    concurrency: int = Field(
        default=8, ge=1, strict=True,
        description="concurrency must be an int >= 1: the items in flight per actor, e.g. concurrency=8 "
        "(--concurrency on the command line).",
    )
    batch_size: int | None = Field(
        default=None, ge=1, strict=True,
        description="batch_size must be an int >= 1 (items per batch handed to an actor, e.g. batch_size=16), "
        "or None for one batch of concurrency items.",
    )
    actor_cpus: float = Field(
        default=1.0, gt=0, strict=True, allow_inf_nan=False,
        description="actor_cpus must be a number > 0: the CPUs Ray reserves per actor, e.g. actor_cpus=0.5.",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise explain(error, type(self), type(self).__name__) from None

    @classmethod
    def given(cls, value: RayOptions | None, *, owner: str) -> RayOptions:
        """``value`` as the ``ray=`` argument of ``owner``: ``None`` gives the defaults.

        Raises:
            SettingsError: ``value`` is not a ``RayOptions`` (the message says how to build one).
        """
        if value is None:
            return cls()
        if not isinstance(value, cls):
            raise SettingsError(
                f"{owner}(ray={value!r:.80}) is invalid: ray must be a RayOptions, e.g. "
                "ray=RayOptions(address='auto', actors=4, concurrency=8), or None for the defaults."
            )
        return value

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is None or value == "local":
            return None
        if value == "auto" or _SCHEME.fullmatch(value):
            return value
        match = _HOST_PORT.fullmatch(value)
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ValueError(f"{value!r} is not an address Ray can connect to")
        return value

    @property
    def rows_per_batch(self) -> int:
        """The batch size handed to ``map_batches``: ``batch_size``, or ``concurrency`` when it is ``None``."""
        return self.batch_size if self.batch_size is not None else self.concurrency

    def map_batches_kwargs(self) -> dict[str, Any]:
        """The pool's keyword arguments of ``ray.data.Dataset.map_batches`` (batch size, actors, CPUs)."""
        return {"batch_size": self.rows_per_batch, "concurrency": self.actors, "num_cpus": self.actor_cpus}

    def replaced(self, **changes: Any) -> RayOptions:
        """A validated copy with ``changes`` applied."""
        return type(self)(**{**self.model_dump(), **changes})
