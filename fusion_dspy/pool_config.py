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

    [[teachers]]
    name = "gateway"
    model = "openai/gpt-4o"
    api_base_env = "GATEWAY_URL"        # a URL with user:password@ is a credential too
    [teachers.settings.extra_headers]
    Authorization_env = "GATEWAY_AUTH"  # any <setting>_env is read from the environment

    [[fusors]]
    name = "qwen-1.5b"
    model = "local/qwen2.5-1.5b"
    temperature = 0.0

    [pools]                             # optional named subsets of the teachers
    diverse = ["qwen-0.5b", "gpt-4o-mini", "my-vllm"]
    api = ["gpt-4o-mini"]

Named pools let ``fusion-dspy run --pool diverse`` (and ``eval``/``synth --pool``) use a subset, and give
``fusion-dspy optimize`` its pool choices (one categorical parameter instead of every subset).

Credentials (keys, tokens, passwords, ``Authorization`` headers, URLs with userinfo) are refused
anywhere in the file; name an environment variable with ``<setting>_env`` instead (the rule is
:mod:`fusion_dspy.credentials`). Errors say where such a value is, never what it is.

Model strings: ``local/<catalog name or .gguf path>`` runs in-process through llama.cpp;
``fake/<name>`` is the offline test engine (:mod:`fusion_dspy.testing`); anything else goes to
``dspy.LM`` unchanged (every provider DSPy supports: OpenAI, Anthropic, Cohere, vLLM, Ollama...).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from typing import Any

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import StringConstraints
from pydantic import ValidationError
from pydantic import field_validator
from pydantic import model_validator

from fusion_dspy.credentials import check_env_name
from fusion_dspy.credentials import credential_locations
from fusion_dspy.credentials import env_setting
from fusion_dspy.credentials import read_secret
from fusion_dspy.credentials import resolve_env
from fusion_dspy.limits import LMLimits
from fusion_dspy.limits import applies_limits
from fusion_dspy.teacher import DEFAULT_TEMPERATURE
from fusion_dspy.teacher import Teacher

__all__ = ["ConfigError", "LMSpec", "PoolConfig", "TeacherSpec", "load_pool_config", "pick_fusor"]

_CREDENTIALS_HINT = (
    "Credentials never go in config files: export the value as an environment variable and name the "
    "variable with <setting>_env instead (api_key_env = \"OPENAI_API_KEY\", api_base_env = \"MY_URL\", "
    "settings.extra_headers.Authorization_env = \"MY_AUTH\")."
)


# Config values are taken as written: no true -> 1, "0.9" -> 0.9 or inf; names and models without padding.
_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_Temperature = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]


def _refuse_credentials(data: Any, source: str) -> None:
    """The secrets rule (:mod:`fusion_dspy.credentials`) for one config entry or a whole file's data."""
    locations = credential_locations(data, "")
    if locations:
        verb = "holds" if len(locations) == 1 else "hold"
        raise ValueError(f"{source}: {', '.join(locations)} {verb} a credential (value not shown). {_CREDENTIALS_HINT}")


class LMSpec(BaseModel):
    """How to build one LM. Extra LM settings (``max_tokens``, ``top_p``...) go in ``settings``.

    Credentials come only from environment variables: ``api_key_env`` and ``api_base_env`` name
    variables, and so does any ``<setting>_env`` inside ``settings`` (also nested, e.g.
    ``settings.extra_headers.Authorization_env``). A literal credential anywhere in the entry is
    refused, and no error shows its value (see :mod:`fusion_dspy.credentials`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: _Text
    model: _Text
    api_base: str | None = None
    api_base_env: str | None = None
    api_key_env: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    temperature: _Temperature | None = None
    cache: bool = Field(default=True, strict=True)
    settings: dict[str, Any] = Field(default_factory=dict)
    limits: LMLimits | None = None  # client-side provider limits (fusion_dspy.limits)

    @model_validator(mode="before")
    @classmethod
    def _no_literal_credentials(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            name = data.get("name")
            named = isinstance(name, str) and not credential_locations(name, "name")
            _refuse_credentials(dict(data), f"LM {name!r}" if named else "an LM entry")
        return data

    @field_validator("api_key_env", "api_base_env")
    @classmethod
    def _variable_name(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_env_name(value, info.field_name)

    @model_validator(mode="after")
    def _settings_variables(self) -> LMSpec:
        for key in self.settings:
            # build() sets these from the entry's own fields, so the setting would be silently dropped.
            if key in type(self).model_fields and getattr(self, key) is not None:
                raise ValueError(
                    f"LM {self.name!r} settings.{key} duplicates the entry's {key}; set it once, at the top level "
                    "of the entry."
                )
        _check_env_names(self.settings, f"LM {self.name!r} settings")
        if self.api_base and self.api_base_env:
            raise ValueError(f"LM {self.name!r}: give api_base or api_base_env, not both.")
        return self

    @applies_limits
    def build(self) -> Any:
        """Create the ``dspy.LM``. Credentials are read from the environment here and nowhere else."""
        import dspy

        where = f"LM {self.name!r}"
        settings: dict[str, Any] = resolve_env(self.settings, f"{where} settings")
        if self.max_tokens is not None:
            settings["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            settings["temperature"] = self.temperature
        settings["cache"] = self.cache
        provider, _, rest = self.model.partition("/")
        if provider in ("local", "fake") and (self.api_base or self.api_base_env or self.api_key_env):
            raise ValueError(f"{where}: {provider}/ models run in-process; drop api_base/api_key_env.")
        if provider == "local":
            from fusion_dspy.local import lm as local_lm

            return local_lm(rest, **settings)
        if provider == "fake":
            from fusion_dspy.testing import FakeEngine

            return FakeEngine(name=rest).lm(**settings)
        if self.api_base:
            settings["api_base"] = self.api_base
        if self.api_base_env:
            settings["api_base"] = read_secret(self.api_base_env, f"{where} api_base_env")
        if self.api_key_env:
            settings["api_key"] = read_secret(self.api_key_env, f"{where} api_key_env")
        return dspy.LM(self.model, **settings)


def _check_env_names(settings: Mapping[str, Any], where: str) -> None:
    for key, item in settings.items():
        if env_setting(key, f"{where}.{key}") is not None:  # a table here is a literal value, refused unshown
            check_env_name(item, f"{where}.{key}")
        elif isinstance(item, Mapping):
            _check_env_names(item, f"{where}.{key}")


class TeacherSpec(LMSpec):
    """A teacher: an LM plus its sampling temperature and weight in the pool."""

    temperature: _Temperature = DEFAULT_TEMPERATURE
    samples: int = Field(default=1, ge=1, strict=True)

    def build_teacher(self) -> Teacher:
        return Teacher(self.build(), temperature=self.temperature, samples=self.samples, name=self.name)


class PoolConfig(BaseModel):
    """A teacher pool and the fusor LMs that may fuse its candidates."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

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


class ConfigError(ValueError):
    """A pool config file that cannot be used; the message names the file and what to fix."""


def load_pool_config(path: str | os.PathLike[str]) -> PoolConfig:
    """Read and validate a pool config; the format follows the extension (.toml, .yaml/.yml, .json).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ConfigError: If the file is not text, does not parse, holds a literal credential, or does not
            validate; the message names the file (and line or setting) and never a credential's value.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Pool config {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"{path}: unknown pool config format {suffix!r}; use .toml, .yaml or .json.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {error.start} cannot be decoded); a pool config is "
            "TOML, YAML or JSON text."
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error}).") from None
    data = _parse(path, suffix, text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a table/mapping with a 'teachers' list at the top, got {type(data).__name__}."
        )
    try:
        _refuse_credentials(data, str(path))
        return PoolConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_describe(error)}") from None
    except ValueError as error:  # a literal credential: the message names the file and where, never the value
        raise ConfigError(str(error)) from None


def _parse(path: Path, suffix: str, text: str) -> Any:
    """The file's data; a syntax error becomes one line naming the file and the position."""
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error}).") from None
    if suffix == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_JsonObject.from_pairs)
        except json.JSONDecodeError as error:
            where = f"line {error.lineno}, column {error.colno}"
            raise ConfigError(f"{path}: not valid JSON ({error.msg} at {where}).") from None
        duplicate = _first_duplicate_key(data, "")
        if duplicate is not None:
            key, where = duplicate
            raise ConfigError(
                f"{path}: duplicate key {key!r} in {where or 'the top-level object'}; give each key once."
            )
        return data
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_yaml_loader())  # a yaml.SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"{path}: not valid YAML ({problem}{where}).") from None


class _JsonObject(dict):  # type: ignore[type-arg]
    """A JSON object that remembers the keys it repeated (``json`` would keep only the last value)."""

    duplicates: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data = cls(pairs)
        if len(data) != len(pairs):
            keys = [key for key, _ in pairs]
            data.duplicates = tuple(key for number, key in enumerate(keys) if key in keys[:number])
        return data


def _first_duplicate_key(data: Any, where: str) -> tuple[str, str] | None:
    """The first repeated key in parsed JSON and where its object is (``teachers[0]``), or ``None``."""
    if isinstance(data, _JsonObject) and data.duplicates:
        return data.duplicates[0], where
    if isinstance(data, dict):
        places = [(f"{where}.{key}" if where else key, item) for key, item in data.items()]
    elif isinstance(data, list):
        places = [(f"{where}[{number}]", item) for number, item in enumerate(data)]
    else:
        return None
    for place, item in places:
        found = _first_duplicate_key(item, place)
        if found is not None:
            return found
    return None


@functools.cache
def _unique_key_yaml_loader() -> type:
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (it would keep only the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *defaults": explicit keys may override merged ones
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark
                        )
                    seen.add(key)
                except TypeError:
                    pass  # an unhashable key: SafeLoader reports it
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _describe(error: ValidationError) -> str:
    """A pydantic error as one line: each problem's location and message (inputs are never shown)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"]).lstrip(".")
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def pick_fusor(fusors: Mapping[str, Any], name: str | None, *, source: object = "the pool config") -> str | None:
    """The fusor to use: ``name``, which must be configured, or else the first configured one.

    Returns ``None`` when no fusor is configured and none was asked for; callers decide whether to fall
    back (e.g. to a teacher's LM) or to refuse.
    """
    if name is not None and name not in fusors:
        raise ValueError(f"Fusor {name!r} is not in {source}; known fusors: {sorted(fusors)}.")
    return name if name is not None else next(iter(fusors), None)
