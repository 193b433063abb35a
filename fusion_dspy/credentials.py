"""The one secrets rule for LM settings: credentials come from environment variables, never from files.

A pool config is a file people commit, paste into issues and attach to studies. So any setting that
carries a credential is refused when it holds a literal value, wherever it sits:

* a setting whose *name* says it is a credential: a word of the name (split at ``_``, ``-``, ``.``
  and camelCase) is one of :data:`CREDENTIAL_WORDS`, its plural or several run together
  (``api_key``, ``api_keys``, ``openai_api_key``, ``access_token``, ``HFToken``, ``AUTHTOKEN``,
  ``extra_headers.Authorization``, ``X-Api-Key``, ``client_secret``, ``password``...);
* a URL with userinfo (``https://user:KEY@host/v1``) or a credential in its query string
  (``?api_key=...``), in any setting.

Instead, name the variable: ``<setting>_env = "VAR"`` (for example ``api_key_env``, or
``extra_headers = {Authorization_env = "MY_AUTH_HEADER"}``) and the value is read from the
environment when the LM is built (:func:`resolve_env`). A key that is only ``_env`` names no setting
and is refused (:func:`env_setting`). Values read that way are remembered
(:func:`remember_secret`) so :func:`redact` can blank them out of any text we print or record.

Errors raised here name *where* the credential is (``teachers[0].settings.extra_headers.Authorization``)
and never the value.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CREDENTIAL_WORDS",
    "ENV_SUFFIX",
    "check_env_name",
    "credential_locations",
    "env_setting",
    "is_credential_name",
    "redact",
    "remember_secret",
    "resolve_env",
]

#: A setting named ``<name>_env`` holds the *name* of an environment variable, read at build time.
ENV_SUFFIX = "_env"

#: Words that make a setting's name a credential (compared case-insensitively, per word of the name).
CREDENTIAL_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "bearer",
    }
)

#: Words that only qualify a credential word run together with it (``ACCESSTOKEN``, ``APITOKEN``).
_QUALIFIERS = ("api", "access", "private", "client", "refresh", "session")

# Words split at separators, at camelCase (``apiKey``) and at the end of an acronym (``HFToken``, ``OpenAIKey``).
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# A word that is a credential word, its plural (``api_keys``) or one run together (``AUTHTOKEN``).
_CREDENTIAL_WORD = re.compile(
    "(?:{any})*(?:{credential})s?".format(
        # without "apikey" (it is "api" + "key"), so no word can be read two ways: no runaway backtracking
        any="|".join(sorted({*CREDENTIAL_WORDS - {"apikey"}, *_QUALIFIERS}, key=len, reverse=True)),
        credential="|".join(sorted(CREDENTIAL_WORDS, key=len, reverse=True)),
    ),
    re.IGNORECASE,
)
# scheme://user[:password]@host : a URL that carries its own credentials.
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+@")
_URL_QUERY = re.compile(r"[?&#]([^=&#\s]+)=")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# What a pasted key (rather than a variable name) tends to look like: a prefix as providers issue it (in
# its case: ``hf_AbC...`` is a key, ``HF_TOKEN`` a variable) followed by one run of letters and digits...
_KEY_PREFIXES = ("sk-", "sk_", "pk_", "rk_", "ghp_", "gho_", "github_pat_", "xox", "hf_", "AKIA", "AIza", "glpat-")
# ...or a long run of letters and digits that is not words (variables are words joined by _ or camelCase).
_RANDOM_RUN_CHARS = 20
_CAMEL_CASE = re.compile(r"[a-z]*(?:[A-Z]{1,4}[a-z]{2,})*[A-Z]{0,4}")

_REDACTED = "[redacted]"
_secrets: set[str] = set()
_lock = threading.Lock()


def is_credential_name(name: str) -> bool:
    """Whether a setting called ``name`` carries a credential (``api_key``, ``api_keys``, ``HFToken``, ``AUTHTOKEN``).

    ``max_tokens`` is a plural of ``token`` too: harmless, as only text values are refused (a number never is).
    """
    return any(_CREDENTIAL_WORD.fullmatch(word) for word in _WORD_SPLIT.split(str(name)) if word)


def credential_locations(value: Any, where: str) -> list[str]:
    """Where ``value`` (a config entry, a settings mapping...) holds a literal credential.

    Returns:
        Dotted locations such as ``"teachers[0].settings.extra_headers.Authorization"``; empty when
        the value is clean. ``*_env`` settings are fine: they name a variable, not a value.
    """
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            place = f"{where}.{name}" if where else name
            if name.lower().endswith(ENV_SUFFIX):
                continue  # checked by env_setting and check_env_name (a bare "_env" is refused there)
            if is_credential_name(name) and _holds_text(item):
                found.append(place)
                continue
            found += credential_locations(item, place)
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value):
            found += credential_locations(item, f"{where}[{number}]")
    elif isinstance(value, str) and _url_has_credentials(value):
        found.append(where)
    return found


def _holds_text(value: Any) -> bool:
    """A credential is text: numbers and flags (``auth_retries = 3``) are not refused."""
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, Mapping):
        return any(_holds_text(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_text(item) for item in value)
    return value is not None and not isinstance(value, (bool, int, float))


def _url_has_credentials(text: str) -> bool:
    if _URL_USERINFO.search(text):
        return True
    return "://" in text and any(is_credential_name(name) for name in _URL_QUERY.findall(text))


def env_setting(key: Any, where: str) -> str | None:
    """The setting a ``<setting>_env`` key reads from the environment (``api_key`` for ``api_key_env``).

    Returns:
        ``None`` when ``key`` is an ordinary setting (it does not end in ``_env``, in any case).

    Raises:
        ValueError: If ``key`` is only ``_env``: it names no setting to fill.
    """
    name = str(key)
    if not name.lower().endswith(ENV_SUFFIX):
        return None
    setting = name[: -len(ENV_SUFFIX)]
    if not setting:
        raise ValueError(
            f"{where} names no setting: a key <setting>{ENV_SUFFIX} reads <setting> from the environment "
            f"variable it names. Put the setting's name before {ENV_SUFFIX}, e.g. api_key_env = \"OPENAI_API_KEY\" "
            f"or extra_headers.Authorization_env = \"MY_AUTH\"."
        )
    return setting


def check_env_name(name: Any, where: str) -> str:
    """``name`` if it can be an environment variable's name; else a ``ValueError`` that does not show it.

    A key pasted where the variable's *name* belongs (``api_key_env = "sk-..."``) is refused without
    being printed.
    """
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name) or _looks_like_a_key(name):
        raise ValueError(
            f"{where} must be the NAME of an environment variable (letters, digits and _), such as "
            "OPENAI_API_KEY; the value given is not one (not shown: it may be the secret itself). Export "
            f"the secret first (export MY_KEY=...) and set {where} = \"MY_KEY\"."
        )
    return name


def _looks_like_a_key(name: str) -> bool:
    """``hf_AbC...``, ``ghp_...``, ``AKIA...``, 32 hex digits; not ``HF_TOKEN`` or ``OPENAI_API_KEY_20240115_PROD``."""
    for prefix in _KEY_PREFIXES:
        rest = name[len(prefix) :]
        if name.startswith(prefix) and "_" not in rest and len(rest) >= 8:
            return True
    return any(_looks_random(part) for part in name.split("_"))


def _looks_random(part: str) -> bool:
    """A long run with digits among its letters, or mixed case that is not camelCase words."""
    if len(part) < _RANDOM_RUN_CHARS:
        return False
    if any(ch.isdigit() for ch in part) and any(ch.isalpha() for ch in part):
        return True
    mixed_case = part.lower() != part and part.upper() != part
    return mixed_case and not _CAMEL_CASE.fullmatch(part)


def resolve_env(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``settings`` with every ``<name>_env = "VAR"`` replaced by ``<name> = $VAR``, recursively.

    Raises:
        ValueError: If a variable is not set (the message names it and the setting, never a value),
            if a ``*_env`` value is not a variable name, or if a key is only ``_env``.
    """
    resolved: dict[str, Any] = {}
    for key, item in settings.items():
        name = str(key)
        place = f"{where}.{name}" if where else name
        setting = env_setting(name, place)
        if setting is not None:
            # Before any table: a *_env setting names one variable, a table under it is a literal value.
            resolved[setting] = read_secret(check_env_name(item, place), place)
        elif isinstance(item, Mapping):
            resolved[name] = resolve_env(item, place)
        else:
            resolved[name] = item
    return resolved


def read_secret(variable: str, where: str) -> str:
    """The value of environment variable ``variable`` (remembered for :func:`redact`)."""
    value = os.environ.get(variable)
    if not value:
        raise ValueError(
            f"{where} reads ${variable}, which is not set. Export it first: export {variable}=..."
        )
    remember_secret(value)
    return value


def remember_secret(value: str) -> None:
    """Blank ``value`` out of everything :func:`redact` sees from now on (values under 4 chars are ignored)."""
    if isinstance(value, str) and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every remembered secret and every URL's userinfo replaced by ``[redacted]``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return _URL_USERINFO.sub(lambda m: m.group(0).split("://", 1)[0] + f"://{_REDACTED}@", text)
