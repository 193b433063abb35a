"""Derive llama.cpp grammars (GBNF) that force a reply DSPy's adapters can parse.

Small local models often know the answer but not DSPy's reply format: SmolLM2-135M writes prose around the field
markers, or copies the ``{answer}`` placeholder from the system prompt. Grammar-constrained decoding removes that
failure mode without touching the prompt, so the cache key, the optimizers and the adapters stay unchanged.

Two request shapes are recognised, both from what the adapter already put in the request:

* **JSON** (``JSONAdapter``): the request's ``response_format`` carries a JSON schema (or ``json_object``, in
  which case the field names are read from the adapter's reminder), converted by
  :mod:`fusion_dspy.local.json_gbnf` (bounded numbers).
* **ChatAdapter**: the last user message ends with "Respond with the corresponding output fields, starting with
  the field `[[ ## a ## ]]`, then ...". The reply is forced into
  ``[[ ## a ## ]]\\n<value>\\n\\n[[ ## b ## ]]\\n<value>\\n\\n[[ ## completed ## ]]``. Each value follows the type the
  system prompt states for the field: free text for ``str``, a number, ``True``/``False``, one of the allowed
  literals, or JSON matching the field's schema.

Free text may not contain ``[[`` or ``[#`` (they would open a field marker), more than one blank line in a row,
or a ``{`` followed by a letter, which is how the placeholders in DSPy's system prompt look
(``{answer}``); JSON such as ``{"a": 1}`` and prose braces such as ``{ x }`` remain possible inside a line. Each
line must start like prose (letter, digit, quote, bullet, non-ASCII): that one rule turned SmolLM2-135M's
``{##  answer ## ## }`` and code-fence replies into sentences. The price: a ``str`` value cannot start a line with
a code fence or a Markdown heading. Blank lines inside a value are allowed: a line after one cannot start with
``[``, so a field still ends only at the next marker. (Forbidding them ended Qwen's GSM8K reasoning at its first
"steps:\n\n": the blank line could only become the next field marker.)
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal

from fusion_dspy.local.json_gbnf import FLOAT_RULE
from fusion_dspy.local.json_gbnf import INT_RULE
from fusion_dspy.local.json_gbnf import SchemaGrammar

__all__ = [
    "GrammarMode",
    "OutputField",
    "chat_adapter_fields",
    "chat_adapter_gbnf",
    "chat_fields",
    "derive_gbnf",
    "json_adapter_fields",
    "json_schema_gbnf",
]

_logger = logging.getLogger(__name__)

GrammarMode = Literal["auto", "off"]
"""``"auto"`` constrains decoding whenever a grammar can be derived from the request; ``"off"`` never does."""

FieldKind = Literal["text", "int", "float", "bool", "choice", "json"]

_CHAT_REMINDER = "Respond with the corresponding output fields, starting with the field "
_CHAT_REMINDER_END = ", and then ending with the marker for `[[ ## completed ## ]]`."
_JSON_REMINDER = "Respond with a JSON object in the following order of fields: "
_CHAT_FIELD = re.compile(r"`\[\[ ## (\w+) ## \]\]`")
_JSON_FIELD = re.compile(r"`(\w+)`")
# ChatAdapter writes "{name}        # note: ..." at the start of a line, the note running to the blank line before
# the next field marker (a Literal value may hold quotes and line breaks); JSONAdapter writes it inside a JSON string.
_NOTE = re.compile(r"^\{(\w+)\}\s+# note: the value you produce (.*?)(?=\n\n\[\[ ## |\n*\Z)", re.MULTILINE | re.DOTALL)
_JSON_NOTE = re.compile(r'"\{(\w+)\}\s+# note: the value you produce ((?:[^"\\\n]|\\.)*)"')
_RULE_NAME_INVALID = re.compile(r"[^a-zA-Z0-9-]+")

# Free text. A line opens with a visible character other than "[", "{", "#", "`" and "<": tiny models otherwise
# open a value with "{answer}", "[## answer", "#" or a code fence and then loop. It may be indented (at most 8
# spaces or tabs, then a visible character), but it is never blank-but-for-spaces: Qwen2.5-1.5B padded a one-word
# answer with 50 lines of "\n  " until the budget ran out. Inside a line "[[", "[#" and "{" + identifier (DSPy's
# placeholders) are impossible. Lines are joined by one newline or one blank line; a line never starts with "[",
# so only the root rule's marker ends a field. A field is ``text-first text-rest{0,N}``.
_TEXT_RULES = r"""
text-first ::= text-open | [ \t]{1,8} text-open
text-open ::= [^\n\[{#`< \t]
text-rest ::= [^\n\[{] | "[" [^\n\[{#] | "{" [^\n\[{a-zA-Z_] | "\n" text-first | "\n\n" text-first
""".strip()

@dataclasses.dataclass(frozen=True)
class OutputField:
    """One output field as the adapter described it to the model.

    Attributes:
        name: Field name.
        kind: How its value is constrained: free ``text``, ``int``, ``float``, ``bool``, one of ``choices``, or
            ``json`` matching ``schema``.
        choices: Allowed literal values (``kind == "choice"``).
        schema: JSON schema of the value (``kind == "json"``); ``None`` means any JSON value.
    """

    name: str
    kind: FieldKind = "text"
    choices: tuple[str, ...] = ()
    schema: Mapping[str, Any] | None = None


def derive_gbnf(
    *,
    system: str | None,
    messages: Sequence[Mapping[str, Any]],
    response_format: Mapping[str, Any] | None,
) -> str | None:
    """The GBNF grammar implied by a request, or ``None`` when nothing can be derived.

    Args:
        system: The system prompt (DSPy adapters describe the fields and their types there).
        messages: Chat messages as ``{"role": ..., "content": str}``; the last user message holds the reminder.
        response_format: The request's ``Config.response_format`` (OpenAI-style ``json_schema`` or
            ``json_object``), if any.

    Free-text ChatAdapter fields are not bounded here: the engine shares ``max_tokens`` among the fields in
    tokens (:mod:`fusion_dspy.local.budget`).
    """
    last_user = _last_user(messages)
    if response_format is not None:
        schema = _schema_from_response_format(response_format)
        if schema is None:
            fields = json_adapter_fields(system, last_user)
            schema = _object_schema(fields) if fields else {}
        return json_schema_gbnf(schema)
    fields = chat_adapter_fields(system, last_user)
    return chat_adapter_gbnf(fields) if fields else None


def chat_fields(*, system: str | None, messages: Sequence[Mapping[str, Any]]) -> list[OutputField] | None:
    """The output fields of a ChatAdapter request given as chat messages, or ``None`` if it is not one."""
    return chat_adapter_fields(system, _last_user(messages))


def _last_user(messages: Sequence[Mapping[str, Any]]) -> str:
    return next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")


def chat_adapter_fields(system: str | None, last_user: str) -> list[OutputField] | None:
    """Output fields requested by DSPy's ``ChatAdapter``, in order, or ``None`` if the request is not one.

    Field names come from the reminder in the last user message (see
    ``ChatAdapter.user_message_output_requirements``); types from the ``# note: the value you produce ...`` lines
    that ``translate_field_type`` writes into the system prompt.
    """
    start = last_user.rfind(_CHAT_REMINDER)
    if start < 0:
        return None
    end = last_user.find(_CHAT_REMINDER_END, start)
    segment = last_user[start + len(_CHAT_REMINDER) : end if end >= 0 else len(last_user)]
    names = _CHAT_FIELD.findall(segment)
    if not names:
        return None
    notes = _field_notes(system or "")
    return [_field_from_note(name, notes.get(name)) for name in names]


def json_adapter_fields(system: str | None, last_user: str) -> list[OutputField] | None:
    """Output fields requested by DSPy's ``JSONAdapter`` reminder, or ``None`` if there is none."""
    start = last_user.rfind(_JSON_REMINDER)
    if start < 0:
        return None
    line = last_user[start + len(_JSON_REMINDER) :].split("\n", 1)[0]
    # Drop the "(must be formatted as ...)" type hints, which may themselves contain backticks or JSON.
    names = _JSON_FIELD.findall(re.sub(r"\([^)]*\)", "", line))
    if not names:
        return None
    notes = _field_notes(system or "")
    return [_field_from_note(name, notes.get(name)) for name in names]


def chat_adapter_gbnf(
    fields: Sequence[OutputField], *, max_chars: int | None = None, start: int = 0, open_text: bool = False
) -> str:
    """GBNF for ``[[ ## a ## ]]\\n<a>\\n\\n[[ ## b ## ]]\\n<b>\\n\\n[[ ## completed ## ]]``, or for its rest.

    Args:
        fields: The output fields, in the order the adapter asked for them.
        max_chars: Upper bound on each free-text value's length (about; ``None`` for unbounded).
        start: The first field the grammar writes; the reply before it already exists (the engine continues a
            reply cut by ``max_tokens``, see :mod:`fusion_dspy.local.budget`).
        open_text: The existing reply ends inside field ``start``'s free-text value (after a visible character),
            so the grammar continues that value instead of opening the field with its marker.
    """
    if not 0 <= start < len(fields):
        raise ValueError(f"start must index one of the {len(fields)} fields, not {start!r}.")
    if open_text and fields[start].kind != "text":
        raise ValueError(f"open_text needs a free-text field at start={start}, not a {fields[start].kind!r} one.")
    rules: dict[str, str] = {}
    converter = None
    parts: list[str] = []
    for index, field in enumerate(fields):
        if index < start:
            continue
        rule = f"field-{index}-{_RULE_NAME_INVALID.sub('-', field.name)}"
        if index == start and open_text:
            parts.append(rule)
            rules[rule] = "text-rest*" if max_chars is None else f"text-rest{{0,{max(0, max_chars)}}}"
            continue
        marker = f"[[ ## {field.name} ## ]]\n"
        parts.append(_literal(marker if index == 0 else f"\n\n{marker}"))
        if field.kind == "text":
            rest = "text-rest*" if max_chars is None else f"text-rest{{0,{max(1, max_chars - 1)}}}"
            rules[rule] = f"text-first {rest}"
        elif field.kind == "int":
            rules[rule] = INT_RULE
        elif field.kind == "float":
            rules[rule] = FLOAT_RULE
        elif field.kind == "bool":
            rules[rule] = '"True" | "False"'
        elif field.kind == "choice":
            rules[rule] = " | ".join(_literal(choice) for choice in field.choices)
        else:
            if converter is None:
                converter = SchemaGrammar()
            schema = dict(field.schema) if field.schema is not None else {}
            rules[rule] = converter.add(schema, f"{rule}-value")
        parts.append(rule)
    parts.append(_literal("\n\n[[ ## completed ## ]]"))
    lines = [f"root ::= {' '.join(parts)}"]
    lines += [f"{name} ::= {body}" for name, body in rules.items()]
    if any(field.kind == "text" for field in fields[start:]):
        lines.append(_TEXT_RULES)
    if converter is not None:
        lines.append(converter.format().rstrip("\n"))
    return "\n".join(lines) + "\n"


def json_schema_gbnf(schema: Mapping[str, Any]) -> str:
    """GBNF for a JSON value matching ``schema`` (an empty schema means any JSON object).

    Properties come out in schema order, so a DSPy signature's fields appear in the order the adapter asked for;
    numbers have bounded digits (see :mod:`fusion_dspy.local.json_gbnf`).
    """
    converter = SchemaGrammar()
    converter.add(dict(schema) if schema else {"type": "object"}, "root")
    return converter.format()


_ANY_JSON: dict[str, Any] = {"type": ["object", "array", "string", "number", "integer", "boolean", "null"]}


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _field_notes(system: str) -> dict[str, str]:
    notes: dict[str, str] = {}
    for name, note in _NOTE.findall(system):
        notes.setdefault(name, note.strip())  # the first note is the output-field one if names repeat
    for name, escaped in _JSON_NOTE.findall(system):
        try:
            note = json.loads(f'"{escaped}"')
        except ValueError:
            note = escaped
        notes.setdefault(name, note.strip())
    return notes


def _field_from_note(name: str, note: str | None) -> OutputField:
    """Map ``translate_field_type``'s note (``dspy/adapters/utils.py``) to a value constraint."""
    if note is None:
        return OutputField(name=name)
    if note == "must be True or False":
        return OutputField(name=name, kind="bool")
    if note == "must be a single int value":
        return OutputField(name=name, kind="int")
    if note == "must be a single float value":
        return OutputField(name=name, kind="float")
    for prefix in ("must exactly match (no extra characters) one of: ", "must be one of: "):
        if note.startswith(prefix):
            choices = tuple(c for c in note[len(prefix) :].split("; ") if c)
            if choices:
                return OutputField(name=name, kind="choice", choices=choices)
    prefix = "must adhere to the JSON schema: "
    if note.startswith(prefix):
        try:
            schema = json.loads(note[len(prefix) :])
        except ValueError:
            _logger.debug("Unreadable JSON schema for field %r; allowing any JSON value.", name)
            return OutputField(name=name, kind="json")
        if _accepts_plain_string(schema):
            # ChatAdapter passes such values on as raw text (``str | None``): quotes would end up in the value.
            return OutputField(name=name)
        return OutputField(name=name, kind="json", schema=schema)
    return OutputField(name=name)


def _accepts_plain_string(schema: Mapping[str, Any]) -> bool:
    if schema.get("type") == "string" and not schema.get("enum") and "const" not in schema:
        return True
    return any(_accepts_plain_string(alt) for alt in schema.get("anyOf", ()) if isinstance(alt, Mapping))


def _schema_from_response_format(response_format: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema in an OpenAI-, lm15- or llama-cpp-style ``response_format``, or ``None`` for JSON mode."""
    kind = response_format.get("type")
    for candidate in (
        response_format.get("json_schema", {}).get("schema")
        if isinstance(response_format.get("json_schema"), Mapping)
        else None,
        response_format.get("schema"),
    ):
        if isinstance(candidate, Mapping):
            return candidate
    if kind not in (None, "json_object", "json_schema", "json"):
        _logger.debug("Unknown response_format type %r; constraining to a JSON object.", kind)
    return None


def _object_schema(fields: Sequence[OutputField]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in fields:
        if field.kind == "text":
            properties[field.name] = {"type": "string"}
        elif field.kind == "int":
            properties[field.name] = {"type": "integer"}
        elif field.kind == "float":
            properties[field.name] = {"type": "number"}
        elif field.kind == "bool":
            properties[field.name] = {"type": "boolean"}
        elif field.kind == "choice":
            properties[field.name] = {"enum": [_choice_value(c) for c in field.choices]}
        else:
            properties[field.name] = dict(field.schema) if field.schema is not None else _ANY_JSON
    return {"type": "object", "properties": properties, "required": list(properties)}


def _choice_value(choice: str) -> Any:
    try:
        value = ast.literal_eval(choice)
    except (ValueError, SyntaxError):
        return choice
    return value if isinstance(value, (int, float, bool)) else choice
