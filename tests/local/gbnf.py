"""Read our GBNF grammars in tests: their rules, and the language of a rule as a Python regex."""

from __future__ import annotations

import json
import re


def gbnf_rules(gbnf: str) -> dict[str, str]:
    """Rule name -> body, for grammars written one rule per line (as ours are)."""
    return dict(line.split(" ::= ", 1) for line in gbnf.splitlines() if " ::= " in line)


_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{\d+,\d*\}|[()|*+?]|[a-zA-Z0-9-]+|\s+')


def gbnf_regex(gbnf: str, rule: str = "root") -> re.Pattern[str]:
    """The language of a non-recursive GBNF rule as a Python regex (our grammars' free-text rules are regular).

    Literals are JSON strings (as ``_literal`` writes them); character classes use the escapes Python's ``re``
    reads the same way (``\\n``, ``\\t``, ``\\[``).
    """
    rules = gbnf_rules(gbnf)

    def convert(body: str) -> str:
        out = []
        for token in _GBNF_TOKEN.findall(body):
            if token.isspace():
                continue
            if token.startswith('"'):
                out.append(re.escape(json.loads(token)))
            elif token[0].isalnum():
                out.append(f"(?:{convert(rules[token])})")
            else:
                out.append(token)
        assert "".join(_GBNF_TOKEN.findall(body)).replace(" ", "") == body.replace(" ", ""), body
        return "".join(out)

    return re.compile(convert(rules[rule]), re.DOTALL)
