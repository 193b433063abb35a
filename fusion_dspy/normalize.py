"""Canonical forms of answers, so that candidates that say the same thing compare equal.

Voting (:class:`~fusion_dspy.selectors.MajorityVote`) and the ``mode="auto"`` consensus check of
``Fuse`` both ask "do these candidates give the same answer?". Raw equality is too strict: teachers
write ``"Paris."`` and ``"paris"``, ``42`` and ``"42.0"``, or the same JSON object with keys in a
different order. :func:`normalize_value` maps each of those families to one string, and
:func:`answer_key` does it for several output fields at once.

The rules are deliberately conservative: they remove formatting noise (case, Unicode compatibility
forms, whitespace, surrounding quotes, trailing punctuation, number spelling, key order) and never
touch wording, so two different answers never collapse into one.
"""

from __future__ import annotations

import decimal
import enum
import json
import re
import unicodedata
from collections.abc import Mapping
from collections.abc import Sequence
from collections.abc import Set
from typing import Any

__all__ = ["answer_key", "normalize_value"]

# A plain decimal number, optionally signed, with an optional exponent ("42", "-3.50", ".5", "1e3").
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")
# The same with thousands separators ("1,000", "12,345.6"); only well-formed groups of three digits.
_GROUPED_NUMBER = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_WHITESPACE = re.compile(r"\s+")
_TRAILING_PUNCTUATION = ".,;:!?\u3002\uff01\uff1f\u2026"  # ASCII plus ideographic full stop, ！？ and …
_QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "`": "`",
    "\u201c": "\u201d",  # “ ”
    "\u2018": "\u2019",  # ‘ ’
    "\u00ab": "\u00bb",  # « »
    "\u201e": "\u201c",  # „ “
}
# Numbers whose decimal exponent is beyond this are written in scientific notation, so that a
# hostile "1e999999" cannot make us build a million-digit string.
_MAX_PLAIN_EXPONENT = 64


def normalize_value(value: Any) -> str:
    """Return a canonical string for one answer value.

    * ``None`` becomes ``""`` and booleans ``"true"``/``"false"``.
    * Numbers (and strings that are exactly a number) get one spelling: ``42``, ``42.0``, ``"42"``,
      ``"+42.00"`` and ``"42."`` all become ``"42"``; ``0.5`` and ``".5"`` become ``"0.5"``;
      ``"1,000"`` becomes ``"1000"``; a leading typeset minus (U+2212) is a minus. Non-finite
      floats become ``"nan"``, ``"inf"`` or ``"-inf"``.
    * Strings are NFKC-normalized, casefolded, whitespace-collapsed, and stripped of matching
      surrounding quotes and trailing punctuation (``'"Paris."'`` becomes ``"paris"``).
    * Pydantic models, mappings and sequences become compact JSON with sorted keys whose leaves are
      normalized as above, so structured outputs compare by content. Sets are sorted.
    * Enums use their value; anything else is normalized as ``str(value)``.

    Args:
        value: One output field value, typed (as DSPy parsed it) or raw text.

    Returns:
        The canonical form. Equal strings mean "same answer" for voting purposes.
    """
    return _canonical_json(_normalize_tree(value)) if _is_container(value) else _normalize_leaf(value)


def answer_key(outputs: Mapping[str, Any], fields: Sequence[str]) -> tuple[str, ...]:
    """Return the normalized values of ``fields`` in ``outputs``, as a hashable voting key.

    Args:
        outputs: One candidate's output field values (``Candidate.outputs`` or a prediction's dict).
        fields: Names of the fields that make up "the answer", e.g. ``("answer",)``. Order matters
            only in that it is kept in the key.

    Returns:
        One normalized string per field, in the order of ``fields``.

    Raises:
        ValueError: If ``fields`` is empty (every candidate would trivially agree).
        KeyError: If a field is missing from ``outputs``; the message lists the fields present.
    """
    if isinstance(fields, str):
        fields = (fields,)
    if not fields:
        raise ValueError("answer_key() needs at least one field name, e.g. fields=('answer',).")
    missing = [name for name in fields if name not in outputs]
    if missing:
        raise KeyError(
            f"answer_key(): output field(s) {missing} not found; the outputs have {sorted(outputs)}. "
            "Pass field names of the task signature's outputs."
        )
    return tuple(normalize_value(outputs[name]) for name in fields)


def _is_container(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray)):
        return False
    is_model = hasattr(value, "model_dump") and not isinstance(value, type)
    return is_model or isinstance(value, (Mapping, Sequence, Set))


def _normalize_tree(value: Any) -> Any:
    """Replace every leaf of a JSON-like tree with its normalized string."""
    if hasattr(value, "model_dump") and not isinstance(value, type):
        # Python mode keeps sets as sets (JSON mode lists them in iteration order, which equal sets need not share).
        return _normalize_tree(value.model_dump(mode="python"))
    if isinstance(value, Mapping):
        return {str(key): _normalize_tree(item) for key, item in value.items()}
    if isinstance(value, Set):
        return sorted((_normalize_tree(item) for item in value), key=_canonical_json)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [_normalize_tree(item) for item in value]
    return _normalize_leaf(value)


def _canonical_json(tree: Any) -> str:
    return json.dumps(tree, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _normalize_leaf(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        return _canonical_number(value)
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    return _normalize_text(str(value))


def _normalize_text(text: str) -> str:
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    previous = None
    while text != previous:  # '"Paris".' and '"Paris."' both need two rounds
        previous = text
        text = text.rstrip(_TRAILING_PUNCTUATION).rstrip()
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
    number = text.replace("\u2212", "-", 1) if text.startswith("\u2212") else text  # U+2212 MINUS SIGN, typeset
    if _NUMBER.fullmatch(number) or _GROUPED_NUMBER.fullmatch(number):
        return _canonical_number(number.replace(",", ""))
    return text


def _canonical_number(value: int | float | decimal.Decimal | str) -> str:
    if isinstance(value, float):
        value = repr(value)  # shortest round-trip spelling: 0.1 stays 0.1, not 0.1000000000000000055
    try:
        number = decimal.Decimal(value)
    except decimal.InvalidOperation:  # an exponent beyond what decimal holds: keep the (already folded) spelling
        return str(value)
    if number.is_nan():
        return "nan"
    if number.is_infinite():
        return "-inf" if number < 0 else "inf"
    if number.is_zero():
        return "0"  # also folds -0 and 0e5
    # Enough precision to keep every digit: the default context (28 digits) would round long integers; the widest
    # exponent range, so that a huge exponent cannot overflow and a tiny one does not underflow to 0.
    context = decimal.Context(
        prec=max(28, len(number.as_tuple().digits)), Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[]
    )
    number = number.normalize(context)
    if not number.is_finite():  # out of even that range: keep the spelling
        return str(value)
    if abs(number.adjusted()) > _MAX_PLAIN_EXPONENT:
        return f"{number:e}".replace("e+", "e")
    return f"{number:f}"
