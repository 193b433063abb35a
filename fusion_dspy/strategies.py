"""Fusor strategies: how the fusor is asked to work, and what it is shown besides the candidates.

A strategy is a named way of fusing; each is a choice of :attr:`FusorPrompt.strategy
<fusion_dspy.prompt.FusorPrompt.strategy>` and a search dimension of the optimizer:

* ``"paper"``: compare the candidates, then write a new answer (our wording of the paper's prompt;
  the default, rendered exactly as before strategies existed).
* ``"analyse"``: a structured analysis first (what the candidates agree on, where they contradict
  each other, details only one has, errors), then the answer written from it.
* ``"edit"``: start from the consensus. The candidates are ranked by their MBR agreement (mean chrF
  against the others, the same utility as :class:`~fusion_dspy.selectors.MBRSelector`), the top one
  is marked as the draft, and the fusor makes the fewest changes that fix it.
* ``"vote"``: for closed-form answers. A tally says how many candidates share each distinct
  (normalized) answer, so the fusor weighs agreement explicitly instead of guessing it.

Everything here is pure: functions from (candidates in the order shown, output fields, strategy) to
text. Candidate ids always follow the shown order (``id=K`` is the K-th shown candidate), so the
fusor report's ``order`` keeps meaning the same thing under every strategy.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal
from typing import get_args

from fusion_dspy.candidate import Candidate
from fusion_dspy.candidate import render_candidates
from fusion_dspy.candidate import render_value
from fusion_dspy.normalize import answer_key

__all__ = [
    "STRATEGIES",
    "Strategy",
    "agreement_ranking",
    "comparison_description",
    "render_strategy_candidates",
    "strategy_instruction",
    "vote_fields",
]

Strategy = Literal["paper", "analyse", "edit", "vote"]

#: Every strategy name, the default first.
STRATEGIES: tuple[str, ...] = get_args(Strategy)

_INSTRUCTIONS: dict[str, str] = {
    "paper": "",
    "analyse": (
        "Before you write, analyse the candidates in four parts: (1) what they agree on, (2) where they "
        "contradict each other and which side is right, (3) details that only one candidate has and "
        "whether they belong in the answer, (4) errors in any candidate. Then write the response from "
        "that analysis, not by copying one candidate."
    ),
    "edit": (
        "The candidates are listed by how much the others agree with them; the first one, marked as the "
        "draft, is the consensus answer. Treat it as a draft to edit: make the fewest changes that fix "
        "its errors or fill its gaps, using the other candidates as evidence. If the draft is already "
        "right, return it unchanged."
    ),
    "vote": (
        "A tally above the candidates says how many of them give each distinct final answer. Agreement "
        "between independent candidates is strong evidence, but check the reasoning: keep the majority "
        "answer unless you find a concrete error in it, and say which answer you chose and why."
    ),
}

_COMPARISON: dict[str, str] = {
    "paper": "At most three short sentences: the strengths and weaknesses of the candidates, what to keep and drop.",
    "analyse": (
        "Four short parts: agreements; contradictions (and which side is right); details only one "
        "candidate has; errors."
    ),
    "edit": "What is wrong or missing in the draft, per the other candidates, and the changes to make (or 'none').",
    "vote": (
        "Which final answer you chose, how many candidates gave it, and the error you found if you overrode "
        "the majority."
    ),
}


def _check(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown fusor strategy {strategy!r}; use one of {list(STRATEGIES)}.")


def strategy_instruction(strategy: Strategy) -> str:
    """The strategy's paragraph of the fusor instruction (``""`` for ``"paper"``: nothing added)."""
    _check(strategy)
    return _INSTRUCTIONS[strategy]


def comparison_description(strategy: Strategy) -> str:
    """The description of the fusor's ``comparison`` output field under ``strategy``."""
    _check(strategy)
    return _COMPARISON[strategy]


def vote_fields(candidates: Sequence[Candidate], fields: Sequence[str]) -> tuple[str, ...]:
    """The fields a ``"vote"`` tally compares: the non-text fields when any exist, else all.

    A signature like ``question -> reasoning, answer: float`` votes on ``answer`` (reasoning text
    never agrees verbatim); a text-only signature votes on all its fields.
    """
    if not candidates:
        return tuple(fields)
    closed = tuple(name for name in fields if any(not isinstance(c.outputs.get(name), str) for c in candidates))
    return closed or tuple(fields)


def render_strategy_candidates(
    candidates: Sequence[Candidate], fields: Sequence[str], strategy: Strategy = "paper"
) -> str:
    """The fusor's ``candidates`` input under ``strategy``.

    Args:
        candidates: The candidates in the order the fusor is shown them (ids ``1..N`` in this order).
        fields: The task's output fields.
        strategy: One of :data:`STRATEGIES`.

    Returns:
        ``"paper"``/``"analyse"``: the fenced candidates (:func:`~fusion_dspy.candidate.render_candidates`).
        ``"edit"``: an agreement ranking line, then the candidates in rank order, the first one's tag
        carrying ``draft``. ``"vote"``: a tally of the distinct answers, then the fenced candidates.
    """
    _check(strategy)
    names = tuple(fields)
    if strategy in ("paper", "analyse") or not candidates:
        return render_candidates(candidates, names)
    if strategy == "edit":
        return _render_edit(candidates, names)
    return _render_vote(candidates, names)


def agreement_ranking(candidates: Sequence[Candidate], fields: Sequence[str]) -> list[tuple[int, float]]:
    """``(position, MBR score)`` pairs, best agreement first (ties: the earlier shown first)."""
    from fusion_dspy.selectors.mbr import mbr_scores  # lazy: sacrebleu

    scores = mbr_scores([c.text(tuple(fields)) for c in candidates])
    return sorted(enumerate(scores), key=lambda item: (-item[1], item[0]))


def _render_edit(candidates: Sequence[Candidate], fields: tuple[str, ...]) -> str:
    ranking = agreement_ranking(candidates, fields)
    summary = ", ".join(
        f"candidate {position + 1} ({score:.0f}{', the draft' if rank == 0 else ''})"
        for rank, (position, score) in enumerate(ranking)
    )
    header = f"Agreement with the other candidates (mean chrF, 0-100), highest first: {summary}."
    ordered = []
    for rank, (position, _score) in enumerate(ranking):
        # Fence each candidate with the shared renderer, then give its tag the shown id (and the mark).
        block = render_candidates([candidates[position]], fields).removeprefix("<candidate id=1>")
        ordered.append(f"<candidate id={position + 1}{' draft' if rank == 0 else ''}>" + block)
    return header + "\n\n" + "\n\n".join(ordered)


def _render_vote(candidates: Sequence[Candidate], fields: tuple[str, ...]) -> str:
    voted = vote_fields(candidates, fields)
    keys = [answer_key(c.outputs, voted) for c in candidates]
    groups: dict[tuple[str, ...], list[int]] = collections.defaultdict(list)
    for position, key in enumerate(keys):
        groups[key].append(position)
    total = len(candidates)
    lines = []
    for _key, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0])):
        shown = _answer_text(candidates[members[0]].outputs, voted)
        ids = ", ".join(str(p + 1) for p in members)
        lines.append(f"- {shown}: {len(members)} of {total} candidates (ids {ids})")
    label = ", ".join(voted)
    header = f"Tally of the final answers ({label}):\n" + "\n".join(lines)
    return header + "\n\n" + render_candidates(candidates, fields)


def _answer_text(outputs: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    from fusion_dspy.candidate import neutralize_markers

    if len(fields) == 1:
        text = render_value(outputs.get(fields[0]))
    else:
        text = "; ".join(f"{name}={render_value(outputs.get(name))}" for name in fields)
    # The tally sits outside the fences: neutralise anything that could pose as a field or a fence.
    text = neutralize_markers(text).replace("<candidate", "< candidate").replace("</candidate", "< /candidate")
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:200] + " [...]"
