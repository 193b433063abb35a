"""One stable hash for every key the library derives from data (draw keys, memo keys, digests).

``stable_hash(value)`` is the sha256 of ``value``'s canonical JSON: keys sorted, no ASCII
escaping, sets as sorted lists, other objects JSON does not know written as ``str(obj)``. Equal
values give equal keys across processes, machines and Python versions (``hash()`` does not), so
keys written to a file by one run are found by the next. Text that UTF-8 cannot encode (a lone
surrogate from an API reply) is hashed by its code points instead of crashing.

``signature_fingerprint(signature)`` is the one statement of what identifies a DSPy signature in a
key (the candidate store's draw and fusor keys use it): everything of it that reaches the prompt or
types the answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json", "derive_seed", "signature_fingerprint", "stable_hash", "type_text"]


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` that :func:`stable_hash` digests."""
    return json.dumps(value, sort_keys=True, default=_unknown_to_json, ensure_ascii=False)


def _unknown_to_json(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):  # equal sets need not iterate alike: order them by content
        return sorted(value, key=canonical_json)
    return str(value)


def stable_hash(value: Any, *, length: int | None = None) -> str:
    """Hex sha256 of ``value``'s canonical JSON; ``length`` keeps only that many leading hex digits."""
    digest = hashlib.sha256(canonical_json(value).encode("utf-8", "surrogatepass")).hexdigest()
    return digest if length is None else digest[:length]


def derive_seed(*parts: Any) -> int:
    """A sampling seed in ``[0, 2**31)`` derived from ``parts`` by :func:`stable_hash`.

    Unlike ``base + offset``, two different tuples of parts almost never give the same seed, so
    seed-derived streams do not overlap (``derive_seed(0, "a", 1)`` and ``derive_seed(1, "a", 0)``
    differ), and the result is never negative (llama.cpp reads ``-1`` as "pick a random seed").
    """
    return int(stable_hash(list(parts), length=8), 16) & 0x7FFFFFFF


def signature_fingerprint(signature: Any) -> str:
    """A stable hash of a DSPy signature class: its instructions and, per field in order, its role,
    name, annotation, description and prefix.

    ``"question -> answer"`` and ``"question -> answer: int"`` differ here (``signature.signature``,
    the field names, does not tell them apart), and so do two signatures whose only difference is a
    field's ``desc``: each is another prompt, or another answer type.
    """
    return stable_hash(
        {
            "instructions": signature.instructions,
            "inputs": _fields(signature.input_fields),
            "outputs": _fields(signature.output_fields),
        }
    )


def _fields(fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    described = []
    for name, field in fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, Mapping) else {}
        described.append({"name": name, "type": type_text(field.annotation), "desc": extra.get("desc"),
                          "prefix": extra.get("prefix")})
    return described


def type_text(annotation: Any) -> str:
    """An annotation as text that is the same in every process and every module that defines the type:
    a class's qualified name (``int``, ``Answer``), the typing repr otherwise (``list[Answer]``,
    ``Literal['yes', 'no']``), module paths dropped (a program saved from a script loads in a notebook
    that defines the same model). The one rule for a field's type in keys and saves."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        text = annotation.__qualname__
    else:
        text = repr(annotation)
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", text)
