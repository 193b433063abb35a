"""Math word problems (GSM8K, MGSM): reasoning plus a final number, scored by exact numeric match.

This is where the paper saw Best-of-N beat fusion (MGSM), and where our local baseline saw a fusor
copy its teachers' wrong numbers: answers are short and checkable, so agreement between samples is
strong evidence. The program therefore defaults to ``mode="select"`` with majority voting on the
``answer`` field; switch to ``mode="fuse"`` or ``"auto"`` to compare.
"""

from __future__ import annotations

import csv
import decimal
import os
import re
from pathlib import Path
from typing import Any

import dspy
from fusion_dspy.programs.data import check_limit
from fusion_dspy.programs.data import find_data_file
from fusion_dspy.programs.data import load_rows
from fusion_dspy.programs.feedback import feedback
from fusion_dspy.programs.feedback import path_note
from fusion_dspy.programs.feedback import score_candidates
from fusion_dspy.programs.task import TaskSpec

from fusion_dspy import Fuse
from fusion_dspy.selectors import MajorityVote

__all__ = [
    "MGSM_LANGUAGES",
    "TASK",
    "MathProgram",
    "SolveMath",
    "exact_number_match",
    "exact_number_match_feedback",
    "extract_number",
    "load_gsm8k",
    "load_math",
    "load_mgsm",
]

#: Languages of MGSM (file suffixes of ``mgsm/mgsm_<lang>.tsv``).
MGSM_LANGUAGES: tuple[str, ...] = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")

_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)\]])[-\u2212]\$?)?"  # a minus only where a number starts: "-5", "-$5", "−5"; not "5-3"
    r"(?:(?:(?P<whole>\d+)[ \u00a0])?(?P<numerator>\d+)/(?P<denominator>\d+)"  # "3/4", "2 1/2"
    r"|(?P<dotted>\d{1,3}(?:\.\d{3}){2,})(?!\d)"  # dots as thousands separators: "1.000.000"
    r"|(?P<grouped>\d{1,3}(?:,\d{3})+(?:\.\d+)?)(?!\d)"  # commas as thousands separators: "1,250.00"
    r"|(?P<plain>(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?))"  # "18", "0.5", ".5", "1.5e3"
)


class SolveMath(dspy.Signature):
    """Solve the math word problem. Think step by step, then give the final answer as a single number
    (no units, no currency symbols)."""

    question: str = dspy.InputField(desc="The word problem.")
    reasoning: str = dspy.OutputField(desc="Step-by-step solution.")
    # A number, not text: adapters then reject "The answer is 18 dollars", and grammar-constrained local
    # models (fusion_dspy.local) are forced to emit a number, which makes majority votes meaningful.
    answer: float = dspy.OutputField(desc="The final answer: one number only.")


class MathProgram(dspy.Module):
    """A math solver over a teacher pool; Best-of-N by majority vote unless told otherwise.

    Args:
        fuse: A ready ``Fuse`` over :class:`SolveMath`.
        **fuse_kwargs: Otherwise, arguments for ``Fuse``; ``mode`` defaults to ``"select"`` and
            ``selector`` to a majority vote on ``answer``.
    """

    def __init__(self, *, fuse: Fuse | None = None, **fuse_kwargs: Any) -> None:
        super().__init__()
        if fuse is None:
            fuse_kwargs.setdefault("mode", "select")
            fuse_kwargs.setdefault("selector", MajorityVote(fields=["answer"]))
            fuse = Fuse(SolveMath, **fuse_kwargs)
        self.fuse = fuse

    def forward(self, question: str) -> dspy.Prediction:
        return self.fuse(question=question)


def extract_number(text: Any) -> decimal.Decimal | None:
    """The last number in ``text`` (``"$1,250.00"`` -> 1250), or ``None`` when there is none.

    The *last* number, because models that ignore "one number only" usually end with the result
    (``"16 - 3 - 4 = 9 eggs, so 9 * 2 = 18"``). A number is read as written: ``-`` or ``−`` (U+2212)
    is its sign only where it starts (``"-5"``, ``"-$5"``; ``"5-3"`` ends with 3), ``a/b`` is a
    fraction and ``"2 1/2"`` a mixed number (``"3/4"`` -> 0.75, ``"2 1/2"`` -> 2.5; ``None`` over zero),
    commas separate thousands only in groups of three (``"1,000"``; ``"1,2,3"`` is a list and ends with 3),
    dots do when there are two or more of them (``"1.000.000"``), and ``"1.5e3"`` is 1500.
    """
    if text is None:
        return None
    if isinstance(text, (int, float, decimal.Decimal)) and not isinstance(text, bool):
        return decimal.Decimal(str(text))
    matches = list(_NUMBER.finditer(str(text)))
    if not matches:
        return None
    match = matches[-1]
    try:
        if match["numerator"] is not None:
            value = decimal.Decimal(match["numerator"]) / decimal.Decimal(match["denominator"])
            if match["whole"] is not None:
                value += decimal.Decimal(match["whole"])
        elif match["dotted"] is not None:
            value = decimal.Decimal(match["dotted"].replace(".", ""))
        elif match["grouped"] is not None:
            value = decimal.Decimal(match["grouped"].replace(",", ""))
        else:
            value = decimal.Decimal(match["plain"])
    except (decimal.InvalidOperation, decimal.DivisionByZero):
        return None
    return -value if match["sign"] else value


def exact_number_match(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """1.0 when the prediction's final number equals the reference answer numerically, else 0.0."""
    gold = extract_number(example.answer)
    guess = extract_number(prediction.get("answer") if hasattr(prediction, "get") else prediction)
    return float(gold is not None and guess is not None and guess == gold)


def exact_number_match_feedback(
    example: dspy.Example, prediction: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> dspy.Prediction:
    """:func:`exact_number_match` with GEPA feedback: right or wrong, the candidates' majority answer,
    and how many candidates were right. ``float()`` of the result is the plain metric's value."""
    score = exact_number_match(example, prediction)
    guess = extract_number(prediction.get("answer") if hasattr(prediction, "get") else prediction)
    gold = extract_number(example.answer)
    parts = [f"Right: {_show(guess)} is the reference answer." if score else
             f"Wrong: answered {_show(guess)}, the reference answer is {_show(gold)}."]
    candidates = score_candidates(example, prediction, exact_number_match)
    if candidates:
        answers = [extract_number(c.outputs.get("answer")) for c in candidates]
        counts: dict[Any, int] = {}
        for answer in answers:
            counts[answer] = counts.get(answer, 0) + 1
        majority, votes = max(counts.items(), key=lambda item: (item[1], -answers.index(item[0])))
        right = sum(c.score for c in candidates)
        parts.append(f"Majority answer among the {len(candidates)} candidates: {_show(majority)} ({votes} of "
                     f"{len(candidates)}); {right:.0f} of {len(candidates)} candidates were right.")
        if not score and right:
            parts.append("A correct candidate was available but not chosen.")
    parts.append(path_note(prediction))
    return feedback(score, parts)


def _show(value: decimal.Decimal | None) -> str:
    if value is None:
        return "no number"
    return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)


def load_gsm8k(
    *,
    data_files: str | os.PathLike[str] | None = None,
    hub: str | None = "openai/gsm8k",
    split: str = "test",
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dspy.Example]:
    """GSM8K problems; the answer is the number after ``####`` in the reference solution.

    Reads ``gsm8k/test.jsonl`` from the data directory when ``data_files`` is not given, else the hub.
    """
    limit = check_limit(limit)
    files = data_files or find_data_file(f"gsm8k/{split}.jsonl")
    rows = load_rows(files, hub=None if files else hub, hub_config="main", split=split, cache_dir=cache_dir)
    examples = []
    for row in rows[:limit]:
        solution, _, final = str(row["answer"]).rpartition("####")
        examples.append(
            dspy.Example(question=row["question"], answer=final.strip().replace(",", ""), solution=solution.strip())
            .with_inputs("question")
        )
    return examples


def load_mgsm(
    language: str = "en",
    *,
    data_files: str | os.PathLike[str] | None = None,
    hub: str | None = "juletxara/mgsm",
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dspy.Example]:
    """MGSM problems in one language (TSV: question, numeric answer; no header; blank lines are skipped)."""
    if language not in MGSM_LANGUAGES:
        raise ValueError(f"Unknown MGSM language {language!r}; choose one of {MGSM_LANGUAGES}.")
    limit = check_limit(limit)
    files = data_files or find_data_file(f"mgsm/mgsm_{language}.tsv")
    if files:
        rows = _read_mgsm_tsv(Path(files))
    else:
        rows = load_rows(None, hub=hub, hub_config=language, split="test", cache_dir=cache_dir)
    return [
        dspy.Example(question=row["question"], answer=str(row["answer_number"]).strip(), language=language)
        .with_inputs("question")
        for row in rows[:limit]
    ]


def _read_mgsm_tsv(path: Path) -> list[dict[str, str]]:
    rows = []
    # Plain csv, not the datasets csv builder: MGSM questions contain quote characters.
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != 2:
                raise ValueError(f"{path}, line {reader.line_num}: {len(cells)} tab-separated columns; an MGSM row "
                                 "is question<TAB>answer (no tab inside the question).")
            rows.append({"question": cells[0], "answer_number": cells[1]})
    return rows


def load_math(data: str | os.PathLike[str] | None = None, *, limit: int | None = None) -> list[dspy.Example]:
    """``None`` or ``"gsm8k"``: GSM8K; ``"mgsm_<lang>"``: MGSM; a ``.jsonl``/``.tsv`` file: that file."""
    if data is None or str(data) == "gsm8k":
        return load_gsm8k(limit=limit)
    text = str(data)
    if text.startswith("mgsm_") and not Path(text).suffix and not Path(text).exists():
        return load_mgsm(text.removeprefix("mgsm_"), limit=limit)
    path = Path(text)
    if path.suffix == ".tsv":
        language = path.stem.removeprefix("mgsm_")
        if not path.exists():
            raise FileNotFoundError(f"MGSM file {text!r} not found: pass an existing .tsv, or 'mgsm_<lang>' for the "
                                    "data directory's copy.")
        return load_mgsm(language if language in MGSM_LANGUAGES else "en", data_files=path, limit=limit)
    return load_gsm8k(data_files=path, limit=limit)


TASK = TaskSpec(
    name="math",
    signature=SolveMath,
    metric=exact_number_match,
    metric_name="exact match",
    load=load_math,
    selectors=("majority", "mbr"),
    answer_fields=("answer",),
)
