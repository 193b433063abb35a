"""Teacher pools from a config file (TOML, YAML or JSON), validated by pydantic.

Example ``pool.toml``::

    [[teachers]]
    name = "qwen-0.5b"
    model = "local/qwen2.5-0.5b"        # a bundled model (fusion_dspy.local) or a .gguf path
    temperature = 0.8
    samples = 2

    [[teachers]]
    name = "gpt-4o-mini"
    model = "openai/gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"      # keys come from the environment, never from the file

    [[teachers]]
    name = "my-vllm"
    model = "openai/meta-llama/Llama-3.1-8B-Instruct"
    api_base = "http://127.0.0.1:8000/v1"
    api_key_env = "VLLM_KEY"

    [[fusors]]
    name = "qwen-1.5b"
    model = "local/qwen2.5-1.5b"
    temperature = 0.0

    [pools]                             # optional named subsets of the teachers
    diverse = ["qwen-0.5b", "gpt-4o-mini", "my-vllm"]
    api = ["gpt-4o-mini"]

Named pools let ``fusion-dspy run --pool diverse`` (and ``eval``/``synth --pool``) use a subset, and give
``fusion-dspy optimize`` its pool choices (one categorical parameter instead of every subset).

Model strings: ``local/<catalog name or .gguf path>`` runs in-process through llama.cpp;
``fake/<name>`` is the offline test engine (:mod:`fusion_dspy.testing`); anything else goes to
``dspy.LM`` unchanged (every provider DSPy supports: OpenAI, Anthropic, Cohere, vLLM, Ollama...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator
from pydantic import model_validator

from fusion_dspy.limits import LMLimits
from fusion_dspy.limits import applies_limits
from fusion_dspy.teacher import DEFAULT_TEMPERATURE
from fusion_dspy.teacher import Teacher

__all__ = ["LMSpec", "PoolConfig", "TeacherSpec", "load_pool_config", "pick_fusor"]

_SECRET_KEYS = {"api_key", "key", "token", "secret", "password"}


class LMSpec(BaseModel):
    """How to build one LM. Extra LM settings (``max_tokens``, ``top_p``...) go in ``settings``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    cache: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)
    limits: LMLimits | None = None  # client-side provider limits (fusion_dspy.limits)

    @field_validator("settings")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        leaked = sorted(k for k in value if k.lower() in _SECRET_KEYS)
        if leaked:
            raise ValueError(
                f"settings must not contain secrets ({leaked}); put the key in an environment variable "
                "and name it with api_key_env."
            )
        return value

    @applies_limits
    def build(self) -> Any:
        """Create the ``dspy.LM``. API keys are read from the environment here and nowhere else."""
        import dspy

        settings: dict[str, Any] = dict(self.settings)
        if self.max_tokens is not None:
            settings["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            settings["temperature"] = self.temperature
        settings["cache"] = self.cache
        provider, _, rest = self.model.partition("/")
        if provider in ("local", "fake") and (self.api_base or self.api_key_env):
            raise ValueError(f"LM {self.name!r}: {provider}/ models run in-process; drop api_base/api_key_env.")
        if provider == "local":
            from fusion_dspy.local import lm as local_lm

            return local_lm(rest, **settings)
        if provider == "fake":
            from fusion_dspy.testing import FakeEngine

            return FakeEngine(name=rest).lm(**settings)
        if self.api_base:
            settings["api_base"] = self.api_base
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(
                    f"LM {self.name!r} reads its API key from ${self.api_key_env}, which is not set. "
                    f"Export it first: export {self.api_key_env}=..."
                )
            settings["api_key"] = key
        return dspy.LM(self.model, **settings)


class TeacherSpec(LMSpec):
    """A teacher: an LM plus its sampling temperature and weight in the pool."""

    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0)
    samples: int = Field(default=1, ge=1)

    def build_teacher(self) -> Teacher:
        return Teacher(self.build(), temperature=self.temperature, samples=self.samples, name=self.name)


class PoolConfig(BaseModel):
    """A teacher pool and the fusor LMs that may fuse its candidates."""

    model_config = ConfigDict(extra="forbid")

    teachers: list[TeacherSpec] = Field(min_length=1)
    fusors: list[LMSpec] = Field(default_factory=list)
    pools: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> PoolConfig:
        for kind, specs in (("teacher", self.teachers), ("fusor", self.fusors)):
            names = [s.name for s in specs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names {duplicates}; every {kind} needs its own name.")
        known = [t.name for t in self.teachers]
        for pool, members in self.pools.items():
            unknown = [m for m in members if m not in known]
            if not members or unknown or len(set(members)) != len(members):
                raise ValueError(
                    f"pool {pool!r} must list distinct teacher names from [[teachers]] "
                    f"(unknown: {unknown}; known: {known})."
                )
        return self

    def teacher_specs(self, pool: str | None = None) -> list[TeacherSpec]:
        """The teachers, or only the members of the named ``pool`` (in file order)."""
        if pool is None:
            return list(self.teachers)
        if pool not in self.pools:
            raise ValueError(f"Unknown pool {pool!r}; the config names {sorted(self.pools) or 'no pools'}.")
        members = set(self.pools[pool])
        return [spec for spec in self.teachers if spec.name in members]

    def build_teachers(self, pool: str | None = None) -> list[Teacher]:
        """Build the teachers (or a named pool's) as :class:`~fusion_dspy.Teacher` objects."""
        return [spec.build_teacher() for spec in self.teacher_specs(pool)]

    def build_fusors(self) -> dict[str, Any]:
        """Fusor LMs by name, in file order."""
        return {spec.name: spec.build() for spec in self.fusors}


def load_pool_config(path: str | os.PathLike[str]) -> PoolConfig:
    """Read and validate a pool config; the format follows the extension (.toml, .yaml/.yml, .json)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Pool config {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        data = tomllib.loads(text)
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"Unknown pool config format {suffix!r}; use .toml, .yaml or .json.")
    if isinstance(data, dict):
        for section in ("teachers", "fusors"):
            for entry in data.get(section) or []:
                if isinstance(entry, dict) and any(k.lower() in _SECRET_KEYS for k in entry):
                    raise ValueError(
                        f"{path}: a {section[:-1]} entry holds an API key. Keys never go in config files: "
                        "export it as an environment variable and set api_key_env = \"VAR_NAME\"."
                    )
    return PoolConfig.model_validate(data)


def pick_fusor(fusors: Mapping[str, Any], name: str | None, *, source: object = "the pool config") -> str | None:
    """The fusor to use: ``name``, which must be configured, or else the first configured one.

    Returns ``None`` when no fusor is configured and none was asked for; callers decide whether to fall
    back (e.g. to a teacher's LM) or to refuse.
    """
    if name is not None and name not in fusors:
        raise ValueError(f"Fusor {name!r} is not in {source}; known fusors: {sorted(fusors)}.")
    return name if name is not None else next(iter(fusors), None)
