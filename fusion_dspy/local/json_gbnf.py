"""JSON schema to GBNF, for the schemas DSPy's adapters send, with numbers that cannot run on.

llama.cpp's own converter ships with the compiled runtime (and the prebuilt one returns llguidance grammars, which
cannot be spliced into a GBNF rule set). This module covers what DSPy produces from pydantic and typing
annotations: objects (properties in schema order), ``additionalProperties`` maps, arrays and tuples, strings,
``enum``/``const``, ``anyOf``/``oneOf``, type lists, ``$ref`` into ``$defs``/``definitions``, and numbers.

Every property listed in a schema is emitted, optional or not: that is always a valid instance and keeps the
grammar small. Numbers use :data:`INT_RULE` and :data:`FLOAT_RULE`: a bounded number of digits, no leading
zeros and no exponent, so a sampled reply cannot pad a value with random digits (``1.2523752375237``) or start
one with ``007``.

Examples:
    >>> converter = SchemaGrammar()
    >>> converter.add({"type": "integer"}, "root")
    'root'
    >>> print(converter.rules()["root"])
    int-value
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FLOAT_RULE", "INT_RULE", "SchemaGrammar"]

#: An integer of at most 12 digits, no leading zeros.
INT_RULE = '"-"? ("0" | [1-9] [0-9]{0,11})'
#: A decimal with at most 12 integer and 6 fraction digits. Trailing zeros stay allowed: forbidding them turned a
#: greedy Qwen2.5-0.5B's "12.00" into "12.000001".
FLOAT_RULE = f'{INT_RULE} ("." [0-9]{{1,6}})?'

_BASE_RULES = {
    "int-value": INT_RULE,
    "float-value": FLOAT_RULE,
    "bool-value": '"true" | "false"',
    "null-value": '"null"',
    # JSON string: printable characters and the standard escapes; at most 400 characters, so a looping model
    # still closes it.
    "string-value": r'"\"" string-char{0,400} "\""',
    "string-char": r'[^"\\\x00-\x1f] | "\\" ["\\/bfnrt] | "\\u" [0-9a-fA-F]{4}',
    "ws": '[ ]? | "\\n" [ ]{0,12}',
    "any-value": "any-object | any-array | string-value | float-value | bool-value | null-value",
    "any-object": '"{" ws (any-pair (ws "," ws any-pair){0,63})? ws "}"',
    "any-pair": 'string-value ws ":" ws any-value',
    "any-array": '"[" ws (any-value (ws "," ws any-value){0,63})? ws "]"',
}
_ANY_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_INVALID = re.compile(r"[^a-zA-Z0-9-]+")


class SchemaGrammar:
    """Collects GBNF rules for one or more JSON schemas.

    Call :meth:`add` for each schema with the rule name it should get, then :meth:`format` (or :meth:`rules`).
    ``$ref`` targets are resolved against the root schema passed to :meth:`add`.
    """

    def __init__(self) -> None:
        self._rules: dict[str, str] = {}
        self._used_base: set[str] = set()
        self._root: Mapping[str, Any] = {}
        self._refs: dict[str, str] = {}
        self._prefix = "root"

    def add(self, schema: Mapping[str, Any], name: str) -> str:
        """Add rules for ``schema`` under ``name`` (made GBNF-safe) and return the rule name."""
        self._root = schema
        self._refs = {}
        rule = _safe(name)
        self._prefix = rule
        self._rules[rule] = self._visit(schema, rule)
        return rule

    def rules(self) -> dict[str, str]:
        """All rules so far, including the shared base rules they use."""
        out = dict(self._rules)
        for base in sorted(self._used_base):
            out[base] = _BASE_RULES[base]
        return out

    def format(self) -> str:
        """The rules as GBNF text, one per line."""
        return "\n".join(f"{name} ::= {body}" for name, body in self.rules().items()) + "\n"

    # -- visitors ------------------------------------------------------------------------------------------

    def _base(self, name: str) -> str:
        self._used_base.add(name)
        if name == "string-value":
            self._used_base.add("string-char")
        if name == "any-object":
            self._used_base.add("any-pair")
        return name

    def _visit(self, schema: Any, name: str) -> str:
        """A GBNF expression for ``schema``; sub-schemas that need rules of their own get ``name-...`` rules."""
        if schema is True or not isinstance(schema, Mapping) or not schema:
            return self._any(name)
        if "$ref" in schema:
            return self._ref(schema["$ref"])
        if "const" in schema:
            return _literal(json.dumps(schema["const"], ensure_ascii=False))
        if "enum" in schema:
            return " | ".join(_literal(json.dumps(value, ensure_ascii=False)) for value in schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return " | ".join(self._sub(alt, f"{name}-{i}") for i, alt in enumerate(schema[key]))
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self._visit(schema["allOf"][0], name)
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join(self._sub({**schema, "type": k}, f"{name}-{k}") for k in kind)
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                return self._any(name)
        if kind == "object":
            return self._object(schema, name)
        if kind == "array":
            return self._array(schema, name)
        if kind == "string":
            return self._base("string-value")
        if kind == "integer":
            return self._base("int-value")
        if kind == "number":
            return self._base("float-value")
        if kind == "boolean":
            return self._base("bool-value")
        if kind == "null":
            return self._base("null-value")
        raise ValueError(f"Unsupported JSON schema type {kind!r}.")

    def _sub(self, schema: Any, name: str) -> str:
        """A rule of its own for a sub-schema (keeps alternatives and repetitions well bracketed)."""
        rule = _safe(name)
        if rule not in self._rules:
            self._rules[rule] = ""  # reserve: recursive schemas refer back to it
            self._rules[rule] = self._visit(schema, rule)
        return rule

    def _ref(self, ref: str) -> str:
        if ref in self._refs:
            return self._refs[ref]
        if not ref.startswith("#/"):
            raise ValueError(f"Only local $refs are supported, not {ref!r}.")
        target: Any = self._root
        for part in ref[2:].split("/"):
            target = target[part]
        rule = _safe(f"{self._prefix}-ref-{ref[2:]}")
        self._refs[ref] = rule
        if rule not in self._rules:
            self._rules[rule] = ""
            self._rules[rule] = self._visit(target, rule)
        return rule

    def _object(self, schema: Mapping[str, Any], name: str) -> str:
        properties = schema.get("properties") or {}
        ws = self._base("ws")
        if properties:
            pairs = [
                f"{_literal(json.dumps(key))} {ws} \":\" {ws} {self._sub(sub, f'{name}-{key}')}"
                for key, sub in properties.items()
            ]
            body = f' {ws} "," {ws} '.join(pairs)
            return f'"{{" {ws} {body} {ws} "}}"'
        extra = schema.get("additionalProperties", True)
        value = self._sub(extra if isinstance(extra, Mapping) else {}, f"{name}-value")
        pair = f'{self._base("string-value")} {ws} ":" {ws} {value}'
        return f'"{{" {ws} ({pair} ({ws} "," {ws} {pair}){{0,63}})? {ws} "}}"'

    def _array(self, schema: Mapping[str, Any], name: str) -> str:
        ws = self._base("ws")
        prefix = schema.get("prefixItems")
        if prefix:
            items = [self._sub(sub, f"{name}-{i}") for i, sub in enumerate(prefix)]
            return f'"[" {ws} ' + f' {ws} "," {ws} '.join(items) + f' {ws} "]"'
        item = self._sub(schema.get("items", {}), f"{name}-item")
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(64, low)))  # the default bound never undercuts minItems
        if high == 0:
            return f'"[" {ws} "]"'
        first = f"{item} ({ws} \",\" {ws} {item}){{{max(0, low - 1)},{high - 1}}}"
        return f'"[" {ws} ({first}){"" if low else "?"} {ws} "]"'

    def _any(self, name: str) -> str:
        for base in ("any-value", "any-object", "any-array", "string-value", "float-value", "bool-value",
                     "null-value", "ws"):
            self._base(base)
        return "any-value"


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _safe(name: str) -> str:
    return _INVALID.sub("-", name).strip("-") or "rule"
