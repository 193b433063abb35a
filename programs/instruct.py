"""Instruction following (IFEval): prompts with verifiable constraints, scored by rule-based checkers.

IFEval (Zhou et al., 2023, arXiv 2311.07911) attaches 1-3 checkable instructions to each prompt
("no commas", "at least 300 words", "wrap the answer in double quotes"...). The checkers are Google's
own, as packaged on PyPI by ``if-verifiable`` (``pip install 'fusion-dspy[instruct]'``); this module
only adapts them to DSPy examples and metrics.

Two of IFEval's 25 instruction types tokenize with NLTK's ``punkt`` data, which no PyPI package ships
(``nltk.download`` needs the network): ``length_constraints:number_sentences`` (sentence count) and
``change_case:capital_word_frequency`` (word count). When that data is installed, the checkers use it
unchanged. Offline without it, :func:`ifeval_scores` substitutes NLTK's *untrained* Punkt sentence
splitter and its line-preserving Treebank word tokenizer for those two checks only, and reports it
(``approximate=True``): sentence counts can then differ on abbreviations such as "Dr." or "e.g.".
64 of the 541 IFEval prompts involve one of the two.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import types
from typing import Any

import dspy
from fusion_dspy.programs.data import check_limit
from fusion_dspy.programs.data import find_data_file
from fusion_dspy.programs.data import is_data_file
from fusion_dspy.programs.data import load_rows
from fusion_dspy.programs.feedback import feedback
from fusion_dspy.programs.feedback import path_note
from fusion_dspy.programs.task import TaskSpec

from fusion_dspy import Fuse

__all__ = [
    "TASK",
    "FollowInstructions",
    "IFEvalScores",
    "InstructProgram",
    "ifeval_scores",
    "instruction_accuracy",
    "instruction_feedback",
    "load_ifeval",
    "prompt_accuracy",
]

_logger = logging.getLogger(__name__)

#: The instruction types whose checkers need NLTK's punkt data.
PUNKT_INSTRUCTIONS: frozenset[str] = frozenset(
    {"length_constraints:number_sentences", "change_case:capital_word_frequency"}
)


class FollowInstructions(dspy.Signature):
    """Respond to the request, following every instruction in it exactly (format, length, wording,
    language, punctuation)."""

    prompt: str = dspy.InputField(desc="The request, with its instructions.")
    response: str = dspy.OutputField(desc="The response, exactly as the user should receive it.")


class InstructProgram(dspy.Module):
    """A fused instruction-following module.

    Args:
        fuse: A ready ``Fuse`` over :class:`FollowInstructions`.
        **fuse_kwargs: Otherwise, arguments for ``Fuse(FollowInstructions, **fuse_kwargs)``.
    """

    def __init__(self, *, fuse: Fuse | None = None, **fuse_kwargs: Any) -> None:
        super().__init__()
        self.fuse = fuse if fuse is not None else Fuse(FollowInstructions, **fuse_kwargs)

    def forward(self, prompt: str) -> dspy.Prediction:
        return self.fuse(prompt=prompt)


@dataclasses.dataclass(frozen=True)
class IFEvalScores:
    """IFEval's four scores for one response, and which instructions passed.

    Attributes:
        prompt_strict: 1.0 if every instruction passed on the response as is (IFEval's headline).
        prompt_loose: The same, allowing the loose variants (first/last line or ``*`` removed).
        instruction_strict: Share of the instructions that passed, strict.
        instruction_loose: Share of the instructions that passed, loose.
        passed: ``instruction id -> strict pass`` per instruction, in prompt order.
        approximate: Whether an offline tokenizer stood in for NLTK's punkt data (see module docs).
    """

    prompt_strict: float
    prompt_loose: float
    instruction_strict: float
    instruction_loose: float
    passed: tuple[tuple[str, bool], ...]
    approximate: bool = False


def ifeval_scores(example: dspy.Example, response: str) -> IFEvalScores:
    """Score ``response`` against the example's instructions with IFEval's checkers.

    An empty response (also one that is only a ``<think>`` block) fails every instruction.

    Raises:
        ValueError: When ``example.instruction_id_list`` names an instruction IFEval does not know (the
            checkers would skip it, so a typo would pass), or ``example.kwargs`` does not hold one dict
            per instruction (the checkers would draw the missing thresholds at random).
    """
    api = _checkers()
    ids = list(example.instruction_id_list)
    kwargs = [dict(kw) for kw in example.kwargs]
    if len(kwargs) != len(ids):
        raise ValueError(f"example.kwargs has {len(kwargs)} entries for {len(ids)} instructions in "
                         "example.instruction_id_list: give one dict per instruction ({} when it takes none).")
    unknown = [i for i in ids if i not in api.instructions]
    if unknown:
        raise ValueError(f"example.instruction_id_list names unknown IFEval instruction(s) {unknown}; "
                         f"known ones look like {sorted(api.instructions)[:3]}.")
    sample = api.IFEvalSample(key=example.get("key", 0), prompt=example.prompt, instruction_id_list=ids, kwargs=kwargs)
    results, scores = api.evaluate_output_for_sample("ifeval", sample, response or "")
    passed = tuple((r.instruction_id, bool(r.strict_pass)) for r in results)
    if not results:  # The checkers return no results at all for an empty response: every instruction failed.
        passed = tuple((i, False) for i in ids)
    approximate = not _has_punkt() and bool(PUNKT_INSTRUCTIONS & set(ids))
    return IFEvalScores(
        prompt_strict=float(scores.binary_strict),
        prompt_loose=float(scores.binary_loose),
        instruction_strict=float(scores.partial_strict),
        instruction_loose=float(scores.partial_loose),
        passed=passed,
        approximate=approximate,
    )


def _response(prediction: Any) -> str:
    value = prediction.get("response") if hasattr(prediction, "get") else prediction
    return "" if value is None else str(value)


def prompt_accuracy(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """IFEval prompt-level strict accuracy: 1.0 when the response follows *every* instruction."""
    return ifeval_scores(example, _response(prediction)).prompt_strict


def instruction_accuracy(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """IFEval instruction-level strict accuracy: the share of the prompt's instructions followed
    (partial credit, a smoother signal for an optimizer)."""
    return ifeval_scores(example, _response(prediction)).instruction_strict


def instruction_feedback(
    example: dspy.Example, prediction: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> dspy.Prediction:
    """:func:`instruction_accuracy` with GEPA feedback: which instructions failed, and how the best
    candidate did. ``float()`` of the result is the plain metric's value."""
    scores = ifeval_scores(example, _response(prediction))
    failed = [name for name, ok in scores.passed if not ok]
    total = len(scores.passed)
    parts = [f"Followed {total - len(failed)} of {total} instructions."]
    if failed:
        parts.append("Failed: " + ", ".join(failed) + ".")
    report = getattr(prediction, "fusion", None)
    candidates = [r for r in (getattr(report, "candidates", None) or []) if r.outputs is not None]
    if candidates:
        shares = [(ifeval_scores(example, _response(dspy.Prediction(**r.outputs))).instruction_strict, r.teacher)
                  for r in candidates]
        best, teacher = max(shares)
        parts.append(f"The best of the {len(candidates)} candidates ({teacher}) followed {100 * best:.0f}% of them.")
    parts.append(path_note(prediction))
    return feedback(scores.instruction_strict, parts)


# -- the checkers, and the offline stand-in for NLTK's punkt ----------------------------------------


@functools.cache
def _has_punkt() -> bool:
    import nltk

    for resource in ("tokenizers/punkt_tab/english/", "tokenizers/punkt/english.pickle"):
        try:
            nltk.data.find(resource)
            return True
        except LookupError:
            continue
    return False


@functools.cache
def _checkers() -> types.SimpleNamespace:
    """``if-verifiable``'s API, with the offline tokenizers wired into its IFEval utilities if needed."""
    try:
        from if_verifiable.api import evaluate_output_for_sample
        from if_verifiable.ifeval import instructions_util
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
        from if_verifiable.types import IFEvalSample
    except ImportError as error:
        raise ImportError(
            "The instruct task scores with IFEval's checkers from the `if-verifiable` package: "
            "pip install 'fusion-dspy[instruct]'"
        ) from error
    if not _has_punkt():
        _logger.info("NLTK punkt data not found: IFEval's sentence and word counts use NLTK's untrained "
                     "Punkt splitter and line-preserving tokenizer (see fusion_dspy.programs.instruct).")
        instructions_util._get_sentence_tokenizer = _offline_sentence_tokenizer
        # Only the IFEval utilities' view of nltk changes; nltk itself is left alone for everyone else.
        instructions_util.nltk = _OfflineNltk(instructions_util.nltk)
    return types.SimpleNamespace(evaluate_output_for_sample=evaluate_output_for_sample, IFEvalSample=IFEvalSample,
                                 instructions=frozenset(INSTRUCTION_DICT))


@functools.cache
def _offline_sentence_tokenizer() -> Any:
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer()  # Untrained: punctuation rules only, no learned abbreviations.


class _OfflineNltk:
    """``nltk`` as IFEval's utilities see it offline: ``word_tokenize`` without punkt sentence splitting."""

    def __init__(self, nltk: types.ModuleType) -> None:
        self._nltk = nltk

    def word_tokenize(self, text: str, language: str = "english", preserve_line: bool = False) -> list[str]:
        return self._nltk.word_tokenize(text, language, preserve_line=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nltk, name)


# -- data ---------------------------------------------------------------------------------------------


def load_ifeval(
    *,
    data_files: str | os.PathLike[str] | None = None,
    hub: str | None = None,
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dspy.Example]:
    """IFEval prompts with their instructions (``instruction_id_list``, ``kwargs``).

    Reads ``ifeval/input_data.jsonl`` from the data directory unless ``data_files`` or ``hub`` (e.g.
    ``"google/IFEval"``) is given.
    """
    limit = check_limit(limit)
    files = data_files or (None if hub else find_data_file("ifeval/input_data.jsonl"))
    rows = load_rows(files, hub=hub, split="train", cache_dir=cache_dir)
    examples = []
    for row in rows:
        if limit is not None and len(examples) >= limit:
            break
        ids, kwargs = list(row["instruction_id_list"]), list(row["kwargs"])
        if len(ids) != len(kwargs):
            raise ValueError(f"IFEval row {row.get('key')!r} has {len(ids)} instructions but {len(kwargs)} kwargs.")
        examples.append(
            dspy.Example(
                key=row.get("key"),
                prompt=row["prompt"],
                instruction_id_list=ids,
                # The hub copy fills every kwarg name with None; the checkers want only the given ones.
                kwargs=[{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs],
            ).with_inputs("prompt")
        )
    return examples


def _load(data: str | os.PathLike[str] | None = None, *, limit: int | None = None) -> list[dspy.Example]:
    if data is None:
        return load_ifeval(limit=limit)
    if is_data_file(data):
        return load_ifeval(data_files=data, limit=limit)
    return load_ifeval(hub=str(data), limit=limit)


TASK = TaskSpec(
    name="instruct",
    signature=FollowInstructions,
    metric=prompt_accuracy,
    metric_name="IFEval prompt strict",
    load=_load,
    selectors=("mbr",),
)
