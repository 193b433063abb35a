"""Share a ChatAdapter reply's token budget among its fields, and close a field that overruns its share.

A grammar can bound a value in characters but not in tokens, and ``max_tokens`` counts tokens. The engine used
to bound every free-text field at 1 character per token, the only ratio that is safe for a model that loops one
character at a time; prose runs at about 4 characters per token, so ChainOfThought at ``max_tokens=256`` got 116
characters of reasoning, and the fusor's comparison was cut at 88 characters on 250 of 298 WMT calls.

This module bounds fields in tokens instead, with the generation itself as the counter. Each free-text (or JSON)
field is promised an equal share of the tokens left after the field markers and the typed values (numbers,
booleans, literals) are provided for; a field that ends early leaves its unused tokens to the fields after it.

1. One call writes the whole reply, with no length bound in the grammar, and ``max_tokens`` set so that the
   shares of the fields after the current one stay untouched. Most replies end here.
2. If the call stops on ``length``, the reply is cut at a field boundary: a free-text value that ran out of its
   tokens is closed where it stands (its trailing partial marker and whitespace dropped) and counted as cut; a
   free-text value that had only started, on tokens an earlier field left over, is kept open and continued; a
   cut marker or typed value is rolled back. The next call continues that prefix as the assistant's own text
   (llama.cpp prefill), with a grammar for the rest of the reply.

Every call either finishes the reply or moves past a field, so a reply takes at most ``2 * fields + 1`` calls,
and the calls together never generate more than ``max_tokens`` tokens; a looping model costs its field's share
and nothing more. A reply the budget cannot hold (``max_tokens`` below what the markers need) ends unfinished,
which DSPy reports as a truncated reply.

The module is sans-I/O: :func:`reply_steps` is a generator that yields :class:`Step` requests and receives
:class:`Outcome` results, so the llama.cpp engine drives it and the tests drive it with a scripted model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from collections.abc import Sequence

from fusion_dspy.local.grammar import OutputField
from fusion_dspy.local.grammar import chat_adapter_gbnf

__all__ = ["MARKER_TOKENS", "Outcome", "Reply", "Step", "field_shares", "reply_steps"]

#: Tokens kept for each field marker (``"\n\n[[ ## name ## ]]\n"``, about 8-10 tokens with the bundled models'
#: tokenizers) and for the closing ``[[ ## completed ## ]]``.
MARKER_TOKENS = 10
# Tokens kept for a typed value: the longest value the grammar allows at one token per character (Qwen writes
# numbers digit by digit), so a typed value is never what runs out. JSON is unbounded: a list or object shares the
# free tokens like free text (a cut JSON value is rolled back, so a fixed share would fail every longer value).
_TYPED_TOKENS = {"int": 13, "float": 20, "bool": 5}
# Every free-text field gets at least this many tokens, however small max_tokens is; a JSON value at least 48.
_MIN_SHARE = {"text": 16, "json": 48}
_COMPLETED = "[[ ## completed ## ]]"


@dataclasses.dataclass(frozen=True)
class Step:
    """One generation call.

    Attributes:
        prefill: Assistant text the call continues (``""`` for the first call); the reply starts with it.
        gbnf: Grammar for what the call writes after ``prefill``.
        max_tokens: Generation budget of this call.
    """

    prefill: str
    gbnf: str
    max_tokens: int


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a :class:`Step` produced.

    Attributes:
        text: The reply so far: the step's ``prefill`` followed by what the call generated.
        length: The call stopped because it reached its ``max_tokens``.
        completion_tokens: Tokens the call generated.
    """

    text: str
    length: bool
    completion_tokens: int


@dataclasses.dataclass(frozen=True)
class Reply:
    """The finished reply.

    Attributes:
        text: The reply text.
        length: The budget ran out before the reply could be closed (``max_tokens`` below what the markers
            need); DSPy reports such a reply as truncated. A reply closed by cutting fields is not one.
        cut: Free-text fields closed because they ran out of tokens, in order.
        calls: Generation calls made.
        completion_tokens: Tokens generated over all calls (never above ``max_tokens``).
    """

    text: str
    length: bool
    cut: tuple[str, ...]
    calls: int
    completion_tokens: int


def field_shares(fields: Sequence[OutputField], max_tokens: int) -> list[int]:
    """Tokens promised to each field: its marker, plus its typed value or its equal share of the free tokens (free
    text and JSON values share them)."""
    typed = sum(_typed_tokens(field) for field in fields if field.kind not in _MIN_SHARE)
    n_shared = sum(field.kind in _MIN_SHARE for field in fields)
    free_tokens = max_tokens - MARKER_TOKENS * (len(fields) + 1) - typed
    share = free_tokens // n_shared if n_shared else 0
    return [
        MARKER_TOKENS + (max(_MIN_SHARE[field.kind], share) if field.kind in _MIN_SHARE else _typed_tokens(field))
        for field in fields
    ]


def _typed_tokens(field: OutputField) -> int:
    if field.kind == "choice":
        return max((len(choice) for choice in field.choices), default=1)
    return _TYPED_TOKENS.get(field.kind, 0)


def reply_steps(fields: Sequence[OutputField], max_tokens: int) -> Generator[Step, Outcome, Reply]:
    """Drive the calls that write one ChatAdapter reply for ``fields`` within ``max_tokens`` (see the module)."""
    if not fields:
        raise ValueError("fields must name at least one output field.")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, not {max_tokens!r}.")
    fields = list(fields)
    shares = field_shares(fields, max_tokens)
    # after[i]: tokens promised to the fields after field i, and to the closing marker.
    after = [sum(shares[i + 1 :]) + MARKER_TOKENS for i in range(len(fields))]
    prefix, pos, open_ = "", 0, False
    left, calls, cut = max_tokens, 0, []
    while True:
        # The later fields' shares stay untouched; if max_tokens cannot keep every promise, the field at hand
        # still gets its own share and the later ones share what is left.
        budget = min(left, max(left - after[pos], shares[pos]))
        if budget < 1:
            return Reply(text=prefix, length=True, cut=tuple(cut), calls=calls,
                         completion_tokens=max_tokens - left)
        gbnf = chat_adapter_gbnf(fields, start=pos, open_text=open_)
        outcome = yield Step(prefill=prefix, gbnf=gbnf, max_tokens=budget)
        calls += 1
        left -= max(0, min(outcome.completion_tokens, budget))
        if not outcome.length:
            return Reply(text=outcome.text, length=False, cut=tuple(cut), calls=calls,
                         completion_tokens=max_tokens - left)
        new_prefix, new_pos, new_open, closed = _resume_point(fields, outcome.text, len(prefix), pos, open_)
        if closed is not None:
            cut.append(closed)
        if (new_pos, new_open) <= (pos, open_):  # no field boundary passed: the budget cannot hold the markers
            return Reply(text=outcome.text, length=True, cut=tuple(cut), calls=calls,
                         completion_tokens=max_tokens - left)
        prefix, pos, open_ = new_prefix, new_pos, new_open
        if pos == len(fields):
            return Reply(text=f"{prefix}\n\n{_COMPLETED}", length=False, cut=tuple(cut), calls=calls,
                         completion_tokens=max_tokens - left)


def _marker(fields: Sequence[OutputField], index: int) -> str:
    """The text that opens field ``index`` (``len(fields)`` is the closing marker)."""
    if index == len(fields):
        return f"\n\n{_COMPLETED}"
    marker = f"[[ ## {fields[index].name} ## ]]\n"
    return marker if index == 0 else f"\n\n{marker}"


def _resume_point(
    fields: Sequence[OutputField], text: str, start: int, pos: int, open_: bool
) -> tuple[str, int, bool, str | None]:
    """Where to continue a reply cut by ``max_tokens``: ``(prefix, pos, open, closed field or None)``.

    ``text[:start]`` is the previous prefix, which ends either before field ``pos``'s marker or (``open_``) inside
    its free-text value; the grammar shaped the rest, so markers can be matched literally (free text cannot hold
    ``[[``).
    """
    cursor, index, in_value, value_start, marker_start = start, pos, open_, start, start
    while True:
        if in_value:
            following = _marker(fields, index + 1)
            found = text.find(following, cursor)
            if found < 0:
                break  # cut inside the value of field `index`
            cursor, index = found + len(following), index + 1
            if index == len(fields):
                return text[:found], index, False, None  # only the closing marker was cut
            marker_start, value_start = found, cursor
        else:
            marker = _marker(fields, index)
            if not text.startswith(marker, cursor):
                # Cut inside a marker: the previous field is complete. The closing marker is ours to write.
                return text[:cursor], index, False, None
            marker_start, cursor = cursor, cursor + len(marker)
            value_start, in_value = cursor, True
    field = fields[index]
    if field.kind != "text":
        value = text[value_start:]
        if field.kind != "json" and "\n" in value:  # the value ended; the next marker was cut
            return text[: value_start + value.index("\n")], index + 1, False, None
        return text[:marker_start], index, False, None  # a cut typed value is written again in full
    value, ended = _trim(text[value_start:], _marker(fields, index + 1))
    if index == pos or ended:  # the field's own call ran out (or the model was writing the next marker): close it
        return text[:value_start] + value, index + 1, False, None if ended else field.name
    if not value:
        return text[:marker_start], index, False, None
    return text[:value_start] + value, index, True, None  # started on spare tokens: continue it


def _trim(value: str, following: str) -> tuple[str, bool]:
    """A cut free-text value without a partial marker at its end, trailing whitespace, or an opening bracket,
    and whether the model had ended it: what followed was surely the next marker (it had reached its ``[``)."""
    ended = False
    for size in range(min(len(value), len(following)), 0, -1):
        if following.startswith(value[-size:]):
            ended = "[" in value[-size:]
            value = value[:-size]
            break
    return value.rstrip().rstrip("[{").rstrip(), ended
