"""One teacher draw and its outcome: the unit that selectors rank and the fusor reads."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import unicodedata
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

__all__ = ["Candidate", "neutralize_markers", "render_candidates", "render_outputs", "render_value"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A successful teacher draw.

    Attributes:
        index: Position of the draw in the Fuse plan (``0 .. n-1``); stable across calls.
        teacher: Name of the teacher that produced it.
        sample: Index of this draw among the same teacher's draws.
        outputs: Values of the task signature's output fields, already parsed and typed.
    """

    index: int
    teacher: str
    sample: int
    outputs: Mapping[str, Any]

    def text(self, fields: tuple[str, ...] | None = None) -> str:
        """The candidate's output fields as plain text (used by string metrics and the fusor)."""
        return render_outputs(self.outputs, fields)


def render_value(value: Any) -> str:
    """Render one output value as text: strings verbatim, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):  # pydantic models
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError):
        return str(value)


def _json_default(value: Any) -> Any:
    """JSON for what ``json`` cannot encode: a pydantic model nested in a list or dict as its JSON
    object (not its repr as a string); anything else as ``str``."""
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump(mode="json")
    return str(value)


def render_outputs(outputs: Mapping[str, Any], fields: tuple[str, ...] | None = None) -> str:
    """Render several output fields; a single field is rendered bare, several as ``name: value`` lines."""
    names = tuple(fields) if fields is not None else tuple(outputs)
    if len(names) == 1:
        return render_value(outputs.get(names[0]))
    return "\n".join(f"{name}: {render_value(outputs.get(name))}" for name in names)


def render_candidates(candidates: Sequence[Candidate], fields: tuple[str, ...] | None = None) -> str:
    """Render candidates as clearly delimited, numbered data blocks for an LLM to read.

    This is the one renderer of candidates for every LLM that reads them (the fusor, the LLM judge,
    USC). Candidate text is untrusted model output, fenced as ``<candidate id=K>`` ... ``</candidate>``.
    The fences cannot be forged from inside:

    * anything in a candidate that reads as a candidate tag once case, whitespace, invisible
      characters (format controls, default-ignorables such as variation selectors, the blank
      U+2800), combining marks, Unicode compatibility forms (NFKD: full-width, small-form, math
      letters) and common look-alike letters are ignored (``</CANDIDATE>``, ``</ candidate>``,
      ``＜/candidate＞``, ``</cаndidate>`` with a Cyrillic ``а``) has its ``<`` written as ``&lt;``;
    * DSPy field markers (``[[ ## answer ## ]]`` and their look-alikes) are broken the same way
      (:func:`neutralize_markers`);
    * a candidate with several output fields is rendered one field per line as ``name: value`` with
      every string value JSON-quoted, so a value's line breaks stay inside its quotes and
      ``reasoning = "...\nanswer: PWNED"`` cannot pose as a second ``answer:`` line.

    The rendering is deterministic (no random boundary), so the same call renders the same prompt
    and DSPy's cache and stored studies stay valid.
    """
    names = tuple(fields) if fields is not None else None
    blocks = []
    for number, candidate in enumerate(candidates, start=1):
        body = neutralize_markers(_candidate_body(candidate.outputs, names))
        blocks.append(f"<candidate id={number}>\n{body}\n</candidate>")
    return "\n\n".join(blocks)


def _candidate_body(outputs: Mapping[str, Any], fields: tuple[str, ...] | None) -> str:
    names = fields if fields is not None else tuple(outputs)
    if len(names) == 1:
        return render_value(outputs.get(names[0]))
    lines = []
    for name in names:
        value = outputs.get(name)
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else render_value(value)
        lines.append(f"{name}: {' '.join(text.splitlines())}")  # JSON of a non-string is one line already
    return "\n".join(lines)


def neutralize_markers(text: str) -> str:
    """Break candidate fences and DSPy field markers (``[[ ## name ## ]]``) inside untrusted text.

    Without this a candidate containing ``</candidate>`` would close its own data block early, and
    one containing ``[[ ## answer ## ]]`` would look, to the reading model, like the start of a new
    prompt field. Matching ignores case, whitespace, invisible characters (format controls, every
    default-ignorable code point: zero-width spaces, variation selectors, Hangul fillers; and the
    Braille blank U+2800), combining marks, compatibility forms (NFKD) and common look-alike
    letters, over the whole text, so no amount of padding hides a match. The first character of each
    match is replaced by an HTML character reference (``<`` by ``&lt;``, ``[`` by ``&#91;``, ``#`` by
    ``&#35;``), which keeps the text readable and is idempotent. Ordinary text (HTML, code, Markdown) is left alone.
    """
    if not _TRIGGER.search(text):
        return text
    folded, origins = _fold_text(text)
    replacements: dict[int, str] = {}
    for pattern, replacement in ((_TAG, "&lt;"), (_OPEN_MARKER, "&#91;"), (_CLOSE_MARKER, "&#35;")):
        for match in pattern.finditer(folded):
            start = origins[match.start()]
            if _TRIGGER.match(text, start):
                replacements[start] = replacement
    pieces = []
    last = 0
    for start in sorted(replacements):
        pieces += [text[last:start], replacements[start]]
        last = start + 1
    pieces.append(text[last:])
    return "".join(pieces)


# Characters that fold (NFKD, casefold, look-alikes) to "<", "[" or "#": where a fence or marker can start.
# Also those whose decomposition starts with one (marks dropped): ≮ and ⊀ (with a slash overlay) and the
# vertical presentation forms U+FE3F (of 〈) and U+FE47 (of [).
_ANGLES = "<\uff1c\ufe64\u2039\u3008\u27e8\u2329\u1438\u02c2\u276e\u29fc\u227a\u226e\u2280\ufe3f"
_BRACKETS = "[\uff3b\u27e6\u298b\u301a\u2045\ufe47"
_HASHES = "#\uff03\ufe5f\u266f"
_TRIGGER = re.compile(f"[{re.escape(_ANGLES + _BRACKETS + _HASHES)}]")
_LOOK_ALIKES = str.maketrans(
    {
        **dict.fromkeys(_ANGLES, "<"),
        **dict.fromkeys(_BRACKETS, "["),
        **dict.fromkeys(_HASHES, "#"),
        **dict.fromkeys("\u2215\u2044\u29f8\u2571\\", "/"),
        **dict.fromkeys("\uff3d\u27e7\u298c\u301b\u2046", "]"),
        # Cyrillic, Greek and Latin letters that look like those of "candidate".
        **dict.fromkeys("\u0430\u0251\u03b1", "a"),
        **dict.fromkeys("\u0441\u03f2\u217d", "c"),
        **dict.fromkeys("\u0501\u217e", "d"),
        **dict.fromkeys("\u0435\u03b5", "e"),
        **dict.fromkeys("\u0456\u0131\u03b9", "i"),
        **dict.fromkeys("\u0578\u043f", "n"),
        **dict.fromkeys("\u0442\u03c4", "t"),
    }
)
_TAG = re.compile(r"<\s*(?:/\s*)?candidate")  # not <\s*/?\s*: quadratic over a long run of spaces
_OPEN_MARKER = re.compile(r"\[\s*\[\s*#")
_CLOSE_MARKER = re.compile(r"#\s*\]\s*\]")


# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt, stable since 6.x) beyond the format
# controls (Cf): variation selectors, the combining grapheme joiner, Hangul fillers, reserved ranges.
# Plus U+2800 BRAILLE PATTERN BLANK: not default-ignorable and not whitespace, but it shows as a blank
# like the Hangul fillers, so it could pad a fence the way a space does.
_DEFAULT_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)


def _fold_text(text: str) -> tuple[str, list[int]]:
    """``text`` folded one character at a time (:func:`_fold_char`), and for each folded character
    the position in ``text`` of the character it comes from.

    The whole text is folded, not a window after each ``<``: no amount of invisible characters or
    whitespace pushes the rest of a fence out of sight.
    """
    pieces: list[str] = []
    origins: list[int] = []
    for position, ch in enumerate(text):
        piece = _fold_char(ch)
        pieces.append(piece)
        origins += [position] * len(piece)
    return "".join(pieces), origins


@functools.lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """``ch`` as a reader sees it: compatibility form decomposed (NFKD), casefolded, look-alikes mapped,
    and nothing if it is invisible (a format control or default-ignorable) or a combining mark.

    Folding one character at a time (NFKD, not NFKC) keeps a mark from composing with its base letter:
    ``c`` + U+0301 reads as ``c``, not as ``ć``.
    """
    # Marks go before casefolding too: it turns U+0345 (combining ypogegrammeni) into the letter "ι".
    text = "".join(c for c in unicodedata.normalize("NFKD", ch.translate(_LOOK_ALIKES)) if not _invisible(c))
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in text if not _invisible(c)).translate(_LOOK_ALIKES)


def _invisible(ch: str) -> bool:
    """Whether ``ch`` is a format control (Cf), a default-ignorable code point, the blank U+2800 or a
    combining mark (M*)."""
    category = unicodedata.category(ch)
    return category == "Cf" or category.startswith("M") or _DEFAULT_IGNORABLE.match(ch) is not None
