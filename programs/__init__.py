"""Ready programs for the paper's task families, each a DSPy module that nests ``Fuse``.

Every task module provides a signature, a program (``dspy.Module``), a metric, loaders that read local
files or the project's data directory offline (``$FUSION_DSPY_DATA_DIR``) and hub names online, and a
:class:`TaskSpec` (``TASK``) that the ``fusion-dspy eval`` CLI looks up in :data:`TASKS`.

* :mod:`~fusion_dspy.programs.translate`: WMT24++ / WMT24 general, chrF / chrF++ / BLEU.
* :mod:`~fusion_dspy.programs.chat`: Arena-Hard prompts, pairwise LLM-judge win rate with a bootstrap CI.
* :mod:`~fusion_dspy.programs.factqa`: GeoFact-X, answer plus reasoning, answer match.
* :mod:`~fusion_dspy.programs.math`: GSM8K / MGSM, final-number exact match (Best-of-N by majority).
* :mod:`~fusion_dspy.programs.instruct`: IFEval, Google's rule-based checkers (``if-verifiable``, the
  ``instruct`` extra); prompt- and instruction-level accuracy; runs offline (see the module for the two
  checks that fall back to an untrained sentence splitter when NLTK's punkt data is absent).
* :mod:`~fusion_dspy.programs.recorded`: teachers that replay recorded outputs (e.g. WMT system outputs).
"""

from __future__ import annotations

from fusion_dspy.programs.chat import ChatProgram
from fusion_dspy.programs.chat import PairwiseJudge
from fusion_dspy.programs.chat import WinRate
from fusion_dspy.programs.chat import win_rate
from fusion_dspy.programs.data import data_dir
from fusion_dspy.programs.factqa import FactQAProgram
from fusion_dspy.programs.factqa import answer_match
from fusion_dspy.programs.instruct import InstructProgram
from fusion_dspy.programs.math import MathProgram
from fusion_dspy.programs.math import exact_number_match
from fusion_dspy.programs.recorded import RecordedEngine
from fusion_dspy.programs.recorded import RecordedOutputMissingError
from fusion_dspy.programs.recorded import recorded_lm
from fusion_dspy.programs.recorded import recorded_teachers
from fusion_dspy.programs.task import TaskSpec
from fusion_dspy.programs.translate import TranslationProgram
from fusion_dspy.programs.translate import chrf
from fusion_dspy.programs.translate import chrf_pp
from fusion_dspy.programs.translate import corpus_chrf

__all__ = [
    "TASKS",
    "ChatProgram",
    "FactQAProgram",
    "InstructProgram",
    "MathProgram",
    "PairwiseJudge",
    "RecordedEngine",
    "RecordedOutputMissingError",
    "TaskSpec",
    "TranslationProgram",
    "WinRate",
    "answer_match",
    "chrf",
    "chrf_pp",
    "corpus_chrf",
    "data_dir",
    "exact_number_match",
    "get_task",
    "recorded_lm",
    "recorded_teachers",
    "win_rate",
]


def _tasks() -> dict[str, TaskSpec]:
    from fusion_dspy.programs import chat
    from fusion_dspy.programs import factqa
    from fusion_dspy.programs import instruct
    from fusion_dspy.programs import math
    from fusion_dspy.programs import translate

    return {task.TASK.name: task.TASK for task in (translate, chat, factqa, math, instruct)}


#: Task name -> :class:`TaskSpec`, for ``fusion-dspy eval --task``.
TASKS: dict[str, TaskSpec] = _tasks()


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; the error lists the available ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; available: {sorted(TASKS)}.")
    return TASKS[name]
