"""Text that every file, report and terminal can hold: LM output made safe where it enters.

An LM answer is decoded from JSON by the provider client, and JSON can spell characters that no
UTF-8 writer accepts: ``json.loads('"\\ud800"')`` gives a lone UTF-16 surrogate, which makes
``open(..., encoding="utf-8").write`` and ``model_dump_json()`` raise ``UnicodeEncodeError``. A NUL
character is encodable but truncates C strings, breaks SQLite text columns and terminals.

:func:`clean_value` fixes both once, where a model's output enters a Fuse call, and says how many
characters it changed so the report can record it:

* a surrogate *pair* (two halves in a row, as some decoders leave them) becomes the character it
  encodes: nothing is lost;
* a lone surrogate and NUL become U+FFFD (the replacement character), so the damage stays visible.

Everything else, including other control characters and non-characters, is valid UTF-8 and kept.

:func:`json_line` is the writers' defence in depth: a JSON Lines record that can always be written
as UTF-8, whatever strings reach it. :func:`one_line` fits a multi-line message (an error listing
every failed draw) on one log or terminal line without dropping its cause.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REPLACEMENT", "clean_text", "clean_value", "json_line", "one_line"]

#: What an unencodable character becomes.
REPLACEMENT = "\ufffd"

# A surrogate pair, a lone surrogate, or NUL: the only characters :func:`clean_text` touches.
_UNSAFE = re.compile("([\ud800-\udbff][\udc00-\udfff])|[\ud800-\udfff\x00]")


def clean_text(text: str) -> tuple[str, int]:
    """``text`` with surrogate pairs joined and lone surrogates and NUL replaced by U+FFFD.

    Returns:
        The safe text and the number of characters replaced or joined (0: ``text`` is returned as is).
    """
    if text.isascii() and "\x00" not in text:
        return text, 0  # the common case, without a regex scan
    changes = 0

    def fix(match: re.Match[str]) -> str:
        nonlocal changes
        changes += 1
        pair = match.group(1)
        if pair is None:
            return REPLACEMENT
        return chr(0x10000 + ((ord(pair[0]) - 0xD800) << 10) + (ord(pair[1]) - 0xDC00))

    cleaned = _UNSAFE.sub(fix, text)
    return (cleaned, changes) if changes else (text, 0)


def clean_value(value: Any) -> tuple[Any, int]:
    """Apply :func:`clean_text` to every string inside ``value``, recursively.

    Strings, mapping keys and values, lists, tuples, sets and pydantic models are walked; anything
    else (numbers, ``None``, enums, arbitrary objects) is returned unchanged. A container or model
    is rebuilt only when something inside it changed, so clean values keep their identity.

    Args:
        value: One output value, or a mapping of output field names to values.

    Returns:
        ``(safe value, number of characters changed)``.
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        changes = 0
        items = []
        for key, item in value.items():
            key, key_changes = clean_value(key)
            item, item_changes = clean_value(item)
            changes += key_changes + item_changes
            items.append((key, item))
        if not changes:
            return value, 0
        return _rebuild(value, items), changes
    if isinstance(value, (list, tuple, set, frozenset)):
        cleaned = [clean_value(item) for item in value]
        changes = sum(count for _, count in cleaned)
        if not changes:
            return value, 0
        items = [item for item, _ in cleaned]
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*items), changes
        return type(value)(items), changes
    if hasattr(value, "model_dump") and hasattr(type(value), "model_validate") and not isinstance(value, type):
        return _clean_model(value)
    return value, 0


def _rebuild(value: Mapping[Any, Any], items: list[tuple[Any, Any]]) -> Mapping[Any, Any]:
    if type(value) is dict or not isinstance(value, dict):
        return dict(items)
    try:
        return type(value)(items)
    except Exception:  # a dict subclass with its own constructor: a plain dict holds the same data
        return dict(items)


def _clean_model(model: Any) -> tuple[Any, int]:
    data = {name: getattr(model, name) for name in type(model).model_fields}
    cleaned, changes = clean_value(data)
    if not changes:
        return model, 0
    try:
        return type(model).model_validate(cleaned), changes
    except Exception:  # a validator that rejects U+FFFD: keep the field values, skip validation
        return type(model).model_construct(**cleaned), changes


def json_line(record: Any, **dumps_options: Any) -> str:
    """``json.dumps(record)`` that is always encodable as UTF-8 (no trailing newline).

    Readable non-ASCII text is kept as is. Only when the record holds a lone surrogate is it
    written with ``\\uXXXX`` escapes instead (``ensure_ascii=True``): still valid JSON, and it reads
    back to exactly the same strings.
    """
    line = json.dumps(record, ensure_ascii=False, **dumps_options)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True, **dumps_options)
    return line


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` on one line: whitespace runs (newlines included) become one space, capped at ``limit``.

    Unlike keeping only the first line, this keeps the cause that a message states after a colon
    and a line break (``"... Failures:\n  - draw #0 ...: TimeoutError"``).
    """
    flat = " ".join(clean_text(str(text))[0].split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 6)] + " [...]"
