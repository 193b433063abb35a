"""One stable hash for every key the library derives from data (draw keys, memo keys, digests).

``stable_hash(value)`` is the sha256 of ``value``'s canonical JSON: keys sorted, no ASCII
escaping, objects JSON does not know written as ``str(obj)``. Equal values give equal keys across
processes, machines and Python versions (``hash()`` does not), so keys written to a file by one
run are found by the next. Text that UTF-8 cannot encode (a lone surrogate from an API reply)
is hashed by its code points instead of crashing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "stable_hash"]


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` that :func:`stable_hash` digests."""
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def stable_hash(value: Any, *, length: int | None = None) -> str:
    """Hex sha256 of ``value``'s canonical JSON; ``length`` keeps only that many leading hex digits."""
    digest = hashlib.sha256(canonical_json(value).encode("utf-8", "surrogatepass")).hexdigest()
    return digest if length is None else digest[:length]
