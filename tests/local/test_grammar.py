"""Grammar derivation from real DSPy adapter requests (captured with a recording engine; no model needed)."""

from __future__ import annotations

import json
import re
from typing import Literal

import dspy
import pytest
from dspy.lm15 import Message
from dspy.lm15 import Request
from dspy.lm15 import Response
from dspy.lm15 import TextPart
from dspy.lm15 import Usage

from fusion_dspy.local.grammar import OutputField
from fusion_dspy.local.grammar import chat_adapter_fields
from fusion_dspy.local.grammar import chat_adapter_gbnf
from fusion_dspy.local.grammar import chat_fields
from fusion_dspy.local.grammar import derive_gbnf
from fusion_dspy.local.grammar import json_adapter_fields
from fusion_dspy.local.grammar import json_schema_gbnf
from fusion_dspy.local.json_gbnf import FLOAT_RULE
from fusion_dspy.local.json_gbnf import INT_RULE
from tests.local.gbnf import gbnf_regex
from tests.local.gbnf import gbnf_rules


class Typed(dspy.Signature):
    """Answer with typed fields."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    count: int = dspy.OutputField()
    score: float = dspy.OutputField()
    ok: bool = dspy.OutputField()
    kind: Literal["yes", "no way"] = dspy.OutputField()
    items: list[str] = dspy.OutputField()
    note: str | None = dspy.OutputField()


class Recorder:
    """A DSPy engine that records requests and answers with an unparseable reply."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def complete(self, request: Request) -> Response:
        self.requests.append(request)
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant([TextPart("nothing useful")]),
            finish_reason="stop",
            usage=Usage(input_tokens=1, output_tokens=1),
        )


def capture(signature: type[dspy.Signature] | str, adapter: dspy.Adapter) -> Request:
    recorder = Recorder()
    lm = dspy.LM("local/recorder", engine=recorder, cache=False)
    with dspy.context(lm=lm, adapter=adapter):
        with pytest.raises(dspy.utils.exceptions.AdapterParseError):
            dspy.Predict(signature)(question="q?")
    return recorder.requests[0]


def as_messages(request: Request) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text or ""} for m in request.messages]


def test_chat_adapter_fields_and_types() -> None:
    request = capture(Typed, dspy.ChatAdapter(use_json_adapter_fallback=False))
    fields = chat_adapter_fields(request.system, request.messages[-1].text)
    assert fields is not None
    assert [(f.name, f.kind) for f in fields] == [
        ("answer", "text"),
        ("count", "int"),
        ("score", "float"),
        ("ok", "bool"),
        ("kind", "choice"),
        ("items", "json"),
        ("note", "text"),  # str | None is raw text in ChatAdapter: a JSON string would keep its quotes
    ]
    assert fields[4].choices == ("yes", "no way")
    assert fields[5].schema == {"type": "array", "items": {"type": "string"}}


def test_chat_adapter_gbnf_shape() -> None:
    gbnf = chat_adapter_gbnf([OutputField(name="reasoning"), OutputField(name="answer", kind="int")])
    root = gbnf.splitlines()[0]
    assert root == (
        'root ::= "[[ ## reasoning ## ]]\\n" field-0-reasoning "\\n\\n[[ ## answer ## ]]\\n" field-1-answer '
        '"\\n\\n[[ ## completed ## ]]"'
    )
    assert f"field-1-answer ::= {INT_RULE}\n" in gbnf
    assert "field-0-reasoning ::= text-first text-rest*\n" in gbnf
    capped = chat_adapter_gbnf([OutputField(name="reasoning")], max_chars=100)
    assert "field-0-reasoning ::= text-first text-rest{0,99}\n" in capped


def test_derived_chat_grammar_leaves_length_to_the_token_budget() -> None:
    """Free text is not bounded in characters any more: at 1 character per token ChainOfThought got 116
    characters of reasoning at max_tokens=256. The engine shares max_tokens in tokens (fusion_dspy.local.budget)."""
    request = capture("question -> reasoning, answer", dspy.ChatAdapter(use_json_adapter_fallback=False))
    gbnf = derive_gbnf(system=request.system, messages=as_messages(request), response_format=None)
    assert gbnf is not None
    assert "field-0-reasoning ::= text-first text-rest*\n" in gbnf
    assert "field-1-answer ::= text-first text-rest*\n" in gbnf
    fields = chat_fields(system=request.system, messages=as_messages(request))
    assert [field.name for field in fields or []] == ["reasoning", "answer"]


def test_rest_of_a_reply_grammar() -> None:
    """The grammar for a continued reply: from a later field's marker, or inside an open free-text value."""
    fields = [OutputField(name="reasoning"), OutputField(name="n", kind="int"), OutputField(name="note")]
    full = gbnf_regex(chat_adapter_gbnf(fields))
    reply = ("[[ ## reasoning ## ]]\nTwo plus two.\n\n[[ ## n ## ]]\n4\n\n[[ ## note ## ]]\nEasy."
             "\n\n[[ ## completed ## ]]")
    assert full.fullmatch(reply)
    rest_n = gbnf_regex(chat_adapter_gbnf(fields, start=1))
    assert rest_n.fullmatch(reply[reply.index("\n\n[[ ## n"):])
    assert not rest_n.fullmatch(reply[reply.index("[[ ## n"):])  # a later field's marker opens with a blank line
    open_reasoning = gbnf_regex(chat_adapter_gbnf(fields, start=0, open_text=True))
    assert open_reasoning.fullmatch(reply[len("[[ ## reasoning ## ]]\nTwo plus"):])
    assert open_reasoning.fullmatch(reply[len("[[ ## reasoning ## ]]\nTwo plus two."):])  # may close at once
    assert not open_reasoning.fullmatch("[[ ## x ## ]]" + reply[len("[[ ## reasoning ## ]]\nTwo plus"):])
    open_note = gbnf_regex(chat_adapter_gbnf(fields, start=2, open_text=True))
    assert open_note.fullmatch(" and hard.\n\n[[ ## completed ## ]]")
    with pytest.raises(ValueError, match="open_text"):
        chat_adapter_gbnf(fields, start=1, open_text=True)
    with pytest.raises(ValueError, match="start"):
        chat_adapter_gbnf(fields, start=3)


def test_no_grammar_for_plain_prompts() -> None:
    assert derive_gbnf(system=None, messages=[{"role": "user", "content": "Hello"}], response_format=None) is None


def test_json_adapter_reminder_fields() -> None:
    request = capture(Typed, dspy.JSONAdapter())
    fields = json_adapter_fields(request.system, request.messages[-1].text)
    assert fields is not None
    assert [f.name for f in fields] == ["answer", "count", "score", "ok", "kind", "items", "note"]
    assert [f.kind for f in fields[:5]] == ["text", "int", "float", "bool", "choice"]


def test_json_schema_grammar() -> None:
    # JSONAdapter sends the schema only to LMs that declare support, as the local engine does.
    class Declares(Recorder):
        supports_response_schema = True
        supported_params = frozenset({"response_format"})

    recorder = Declares()
    lm = dspy.LM("local/recorder", engine=recorder, cache=False)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        with pytest.raises(dspy.utils.exceptions.AdapterParseError):
            dspy.Predict(Typed)(question="q?")
    request = recorder.requests[0]
    assert request.config.response_format is not None
    gbnf = derive_gbnf(
        system=request.system, messages=as_messages(request), response_format=request.config.response_format
    )
    assert gbnf is not None and "\nroot ::= " in gbnf
    assert '"\\"count\\""' in gbnf and '"\\"items\\""' in gbnf
    assert f"int-value ::= {INT_RULE}\n" in gbnf and f"float-value ::= {FLOAT_RULE}\n" in gbnf
    # JSON mode without a schema still constrains to an object with the reminder's keys.
    gbnf = derive_gbnf(system=request.system, messages=as_messages(request), response_format={"type": "json_object"})
    assert gbnf is not None and '"\\"answer\\""' in gbnf


def test_chat_gbnf_with_nested_schema() -> None:
    schema = {
        "type": "array",
        "$defs": {"P": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}},
        "items": {"$ref": "#/$defs/P"},
    }
    gbnf = chat_adapter_gbnf([OutputField(name="rows", kind="json", schema=schema), OutputField(name="why")])
    assert "field-0-rows ::= field-0-rows-value" in gbnf
    assert json.dumps("[[ ## why ## ]]\n")[1:-1] in gbnf


def test_number_rules_cannot_run_on() -> None:
    """Typed numbers have bounded digits, no exponent and no leading zeros."""
    assert INT_RULE == '"-"? ("0" | [1-9] [0-9]{0,11})'
    assert FLOAT_RULE == INT_RULE + ' ("." [0-9]{1,6})?'
    for rule in (INT_RULE, FLOAT_RULE):
        assert "*" not in rule and "+" not in rule and "e" not in rule.lower()
    float_field = chat_adapter_gbnf([OutputField(name="x", kind="float")])
    assert gbnf_rules(float_field)["field-0-x"] == FLOAT_RULE
    nested = json_schema_gbnf({"type": "object", "properties": {"v": {"type": "array", "items": {"type": "number"}}}})
    assert gbnf_rules(nested)["float-value"] == FLOAT_RULE


def test_schema_grammar_covers_dspy_schemas() -> None:
    """Every construct pydantic/typing schemas use becomes a rule; every referenced rule is defined."""
    schema = {
        "type": "object",
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}, "tag": {"enum": ["a", "b"]}}}},
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "maxItems": 3},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]},
            "scores": {"type": "object", "additionalProperties": {"type": "number"}},
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "either": {"type": ["integer", "string"]},
            "fixed": {"const": 3},
            "anything": {},
        },
    }
    gbnf = json_schema_gbnf(schema)
    rules = gbnf_rules(gbnf)
    referenced = {
        re.sub(r"[?*]|\{.*", "", token)
        for body in rules.values()
        for token in re.sub(r'"(\\.|[^"\\])*"|\[(\\.|[^\]\\])*\]|[()]', " ", body).split()
        if token[0].isalpha()
    }
    assert referenced <= set(rules), referenced - set(rules)
    assert '"\\"a\\"" | "\\"b\\""' in gbnf  # enum values as JSON literals
    assert "{0,2}" in rules["root-items"]  # maxItems 3 -> first item plus at most two more
    assert rules["root-fixed"] == '"3"'


def _reply(value: str) -> str:
    return f"[[ ## answer ## ]]\n{value}\n\n[[ ## completed ## ]]"


def test_free_text_may_hold_paragraphs_but_no_marker() -> None:
    """A blank line inside a value is allowed (Qwen writes "steps:\\n\\n1. ..."); a line never opens with "["."""
    grammar = gbnf_regex(chat_adapter_gbnf([OutputField(name="answer")], max_chars=200))
    for value in ("Canberra", "Steps:\n\n1. add\n2. check", "Fruit:\n- apple\n  - green\n\t- red", "Zürich (CH)"):
        assert grammar.fullmatch(_reply(value)), value
    for value in ("[## answer", "{answer}", "# Title", "```python", "ok\n[[ ## answer ## ]]\nagain", "a\n\n\nb"):
        assert not grammar.fullmatch(_reply(value)), value


def test_free_text_cannot_pad_with_blank_lines() -> None:
    """Qwen2.5-1.5B answered "Canberra" and then looped on "\\n  " for 50 lines until the budget ended; a line
    holding only spaces is impossible now, so the model must close the field (or say something)."""
    grammar = gbnf_regex(chat_adapter_gbnf([OutputField(name="answer")], max_chars=200))
    for value in ("Canberra\n  \n  \n  ", "Canberra\n  ", "   ", "Canberra\n\t\n", "a\n         b"):
        assert not grammar.fullmatch(_reply(value)), repr(value)
    assert grammar.fullmatch(_reply("Canberra\n        indented by eight"))


def test_free_text_budget_is_enforced() -> None:
    """The budget bounds the value's length, so a looping model closes the field before max_tokens ends."""
    grammar = gbnf_regex(chat_adapter_gbnf([OutputField(name="answer")], max_chars=40))
    assert grammar.fullmatch(_reply("x" * 40))
    assert not grammar.fullmatch(_reply("x" * 41))




class Quoted(dspy.Signature):
    """Pick literal values that hold quotes and line breaks."""

    question: str = dspy.InputField()
    tone: Literal["plain", 'say "hi"'] = dspy.OutputField()
    shape: Literal["a\nb", "c"] = dspy.OutputField()


def test_literal_choices_keep_their_quotes_and_line_breaks() -> None:
    """A Literal value ending in a quote kept it, and one with a line break kept the choices after it: the note
    reader stripped a closing quote meant for JSON strings and stopped at the end of the line."""
    request = capture(Quoted, dspy.ChatAdapter(use_json_adapter_fallback=False))
    fields = chat_adapter_fields(request.system, request.messages[-1].text)
    assert fields is not None
    assert [f.choices for f in fields] == [("plain", 'say "hi"'), ("a\nb", "c")]
    reply = '[[ ## tone ## ]]\nsay "hi"\n\n[[ ## shape ## ]]\na\nb\n\n[[ ## completed ## ]]'
    assert gbnf_regex(chat_adapter_gbnf(fields)).fullmatch(reply)
    parsed = dspy.ChatAdapter().parse(Quoted, reply)
    assert parsed == {"tone": 'say "hi"', "shape": "a\nb"}
    request = capture(Quoted, dspy.JSONAdapter())
    fields = json_adapter_fields(request.system, request.messages[-1].text)
    assert fields is not None
    assert [f.choices for f in fields] == [("plain", 'say "hi"'), ("a\nb", "c")]


def test_min_items_above_the_default_bound() -> None:
    """minItems above the default maxItems of 64 gave the repetition {69,63}, which no reply can satisfy."""
    grammar = json_schema_gbnf({"type": "array", "items": {"type": "integer"}, "minItems": 70})
    low, high = map(int, re.search(r"\{(\d+),(\d+)\}", gbnf_rules(grammar)["root"]).groups())
    assert low <= high, (low, high)
    assert gbnf_regex(grammar).fullmatch(json.dumps(list(range(70))))
    assert not gbnf_regex(grammar).fullmatch(json.dumps(list(range(69))))
