"""One teacher draw and its outcome: the unit that selectors rank and the fusor reads."""

from __future__ import annotations

import dataclasses
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
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
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
      characters, Unicode compatibility forms (NFKC: full-width, small-form, math letters) and common
      look-alike letters are ignored (``</CANDIDATE>``, ``</ candidate>``, ``＜/candidate＞``,
      ``</cаndidate>`` with a Cyrillic ``а``) has its ``<`` written as ``&lt;``;
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
    prompt field. Matching ignores case, whitespace, invisible characters, NFKC compatibility forms
    and common look-alike letters; the first character of each match is replaced by an HTML
    character reference (``<`` by ``&lt;``, ``[`` by ``&#91;``, ``#`` by ``&#35;``), which keeps the
    text readable and is idempotent. Ordinary text (HTML, code, Markdown) is left alone.
    """
    if not _TRIGGER.search(text):
        return text
    pieces = []
    last = 0
    for match in _TRIGGER.finditer(text):
        start = match.start()
        if start < last:
            continue
        folded = _fold(text[start : start + _WINDOW])
        replacement = None
        if folded.startswith("<") and _TAG.match(folded):
            replacement = "&lt;"
        elif folded.startswith("[") and _OPEN_MARKER.match(folded):
            replacement = "&#91;"
        elif folded.startswith("#") and _CLOSE_MARKER.match(folded):
            replacement = "&#35;"
        if replacement is not None:
            pieces += [text[last:start], replacement]
            last = start + 1
    pieces.append(text[last:])
    return "".join(pieces)


# Characters that fold (NFKC, casefold, look-alikes) to "<", "[" or "#": where a fence or marker can start.
_ANGLES = "<\uff1c\ufe64\u2039\u3008\u27e8\u2329\u1438\u02c2\u276e\u29fc\u227a"
_BRACKETS = "[\uff3b\u27e6\u298b\u301a\u2045"
_HASHES = "#\uff03\ufe5f\u266f"
_TRIGGER = re.compile(f"[{re.escape(_ANGLES + _BRACKETS + _HASHES)}]")
_WINDOW = 64  # enough for "< / candidate" with spacing and invisible characters in between
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
_TAG = re.compile(r"<\s*/?\s*candidate")
_OPEN_MARKER = re.compile(r"\[\s*\[\s*#")
_CLOSE_MARKER = re.compile(r"#\s*\]\s*\]")


def _fold(text: str) -> str:
    """``text`` as a reader sees it: NFKC, casefolded, look-alikes mapped, invisible characters removed."""
    text = unicodedata.normalize("NFKC", text.translate(_LOOK_ALIKES)).casefold().translate(_LOOK_ALIKES)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
