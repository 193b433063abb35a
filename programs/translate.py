"""Machine translation: a fused translator, chrF/chrF++/BLEU metrics, and WMT loaders.

The paper's translation setting (WMT24++, en->xx) scores with XCOMET-XL, which needs hub weights;
offline we use sacrebleu's chrF (character n-grams, language-agnostic, robust for CJK) and chrF++.
Two data formats are supported: WMT24++ JSON Lines (``source``/``target`` per row) and the WMT24
general-task text release (line-aligned ``source.txt``, ``reference.refA.txt`` and one file per
system under ``system-outputs/``), whose system outputs make a ready pool of recorded teachers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
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

__all__ = [
    "LANGUAGES",
    "TASK",
    "Translate",
    "TranslationProgram",
    "chrf",
    "chrf_feedback",
    "chrf_pp",
    "CorpusChrF",
    "corpus_bleu",
    "corpus_chrf",
    "load_translation",
    "load_wmt24pp",
    "load_wmt_general",
]

#: Language codes used by WMT24/WMT24++ -> the name the prompt uses.
LANGUAGES: dict[str, str] = {
    "ar": "Arabic", "ar_EG": "Egyptian Arabic", "cs": "Czech", "de": "German", "de_DE": "German",
    "en": "English", "es": "Spanish", "es_MX": "Mexican Spanish", "fr": "French", "fr_FR": "French",
    "hi": "Hindi", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ja_JP": "Japanese",
    "ko": "Korean", "ko_KR": "Korean", "pt": "Portuguese", "ru": "Russian", "ru_RU": "Russian",
    "uk": "Ukrainian", "zh": "Chinese", "zh_CN": "Simplified Chinese", "zh_TW": "Traditional Chinese",
}

_INPUTS = ("source", "source_language", "target_language")


class Translate(dspy.Signature):
    """Translate the source text into the target language. Keep its meaning, tone, names, numbers and
    formatting; write natural text a native speaker would write. Output only the translation."""

    source: str = dspy.InputField(desc="The text to translate.")
    source_language: str = dspy.InputField(desc="The language of the source text.")
    target_language: str = dspy.InputField(desc="The language to translate into.")
    translation: str = dspy.OutputField(desc="The translation, and nothing else.")


class TranslationProgram(dspy.Module):
    """A translator that samples several translations and fuses them.

    Args:
        fuse: A ready ``Fuse`` over :class:`Translate` (its teachers may be recorded systems).
        **fuse_kwargs: Otherwise, arguments for ``Fuse(Translate, **fuse_kwargs)``.

    Example:
        >>> program = TranslationProgram(n=4, teachers=[Teacher(lm_a), Teacher(lm_b)], fusor=lm_c)
        >>> program(source="Good morning.", target_language="German").translation
    """

    def __init__(self, *, fuse: Fuse | None = None, **fuse_kwargs: Any) -> None:
        super().__init__()
        self.fuse = fuse if fuse is not None else Fuse(Translate, **fuse_kwargs)

    def forward(self, source: str, target_language: str, source_language: str = "English") -> dspy.Prediction:
        return self.fuse(source=source, source_language=source_language, target_language=target_language)


# -- metrics ------------------------------------------------------------------------------------------


def _aligned(examples: Sequence[dspy.Example], predictions: Sequence[Any]) -> list[str]:
    """The predictions' hypotheses, after checking there is one per example (sacrebleu would score the
    shorter list's pairs only, silently)."""
    if len(examples) != len(predictions):
        raise ValueError(f"A corpus score needs one prediction per example: got {len(examples)} examples but "
                         f"{len(predictions)} predictions; pass them aligned, in the same order.")
    return [_hypothesis(p) for p in predictions]


def _hypothesis(prediction: Any) -> str:
    value = prediction.get("translation") if hasattr(prediction, "get") else prediction
    return "" if value is None else str(value).strip()


def chrf(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """Sentence-level chrF (0..100) of ``prediction.translation`` against ``example.target``."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(_hypothesis(prediction), [example.target]).score)


def chrf_feedback(
    example: dspy.Example, prediction: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> dspy.Prediction:
    """:func:`chrf` with GEPA feedback: the score, how the best candidate scored, and the reference.

    ``float()`` of the result is :func:`chrf`'s value, so it also works as a plain metric.
    """
    score = chrf(example, prediction)
    parts = [f"chrF {score:.1f} against the reference translation."]
    candidates = score_candidates(example, prediction, chrf)
    if candidates:
        best = max(candidates, key=lambda c: c.score)
        gap = score - best.score
        verdict = (f"{-gap:.1f} points below it: keep more of that candidate" if gap < -0.05
                   else "the answer matches it" if gap <= 0.05 else f"{gap:.1f} points above it: the fusion helped")
        parts.append(f"The best of the {len(candidates)} candidates ({best.teacher}) scored {best.score:.1f}; "
                     f"{verdict}.")
    parts.append(path_note(prediction))
    parts.append(f"Reference: {example.target}")
    return feedback(score, parts)


def chrf_pp(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """Sentence-level chrF++ (chrF plus word bigrams, 0..100)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF(word_order=2).sentence_score(_hypothesis(prediction), [example.target]).score)


class CorpusChrF:
    """Corpus-level chrF (the WMT convention: statistics summed over segments, then one F-score).

    Callable as ``corpus_chrf(examples, predictions)``. It also exposes chrF's per-segment sufficient
    statistics (:meth:`statistics`, :meth:`from_statistics`), which is how sacrebleu itself computes a
    corpus score; the evaluation harness uses them to bootstrap corpus chrF by summing resampled rows
    instead of re-scoring every resample (seconds instead of minutes for a few hundred segments).

    Args:
        word_order: 0 for chrF, 2 for chrF++.
    """

    def __init__(self, *, word_order: int = 0) -> None:
        self.word_order = word_order

    def _metric(self) -> Any:
        from sacrebleu.metrics import CHRF

        return CHRF(word_order=self.word_order)

    def __call__(self, examples: Sequence[dspy.Example], predictions: Sequence[Any]) -> float:
        hypotheses = _aligned(examples, predictions)
        return float(self._metric().corpus_score(hypotheses, [[e.target for e in examples]]).score)

    def statistics(self, examples: Sequence[dspy.Example], predictions: Sequence[Any]) -> list[list[int]]:
        """One row of chrF sufficient statistics (n-gram matches and totals) per segment."""
        hypotheses = _aligned(examples, predictions)
        return self._metric()._extract_corpus_statistics(hypotheses, [[e.target for e in examples]])

    def from_statistics(self, totals: Sequence[int]) -> float:
        """The corpus score of summed statistics rows."""
        return float(self._metric()._compute_score_from_stats([int(v) for v in totals]).score)


#: Corpus chrF (see :class:`CorpusChrF`); ``CorpusChrF(word_order=2)`` is corpus chrF++.
corpus_chrf = CorpusChrF()


def corpus_bleu(examples: Sequence[dspy.Example], predictions: Sequence[Any], *, target_language: str) -> float:
    """Corpus BLEU with the tokenizer the target language needs (CJK tokenizers for zh/ja/ko).

    ``target_language`` is a code (``"zh_CN"``, ``"zh-CN"``, ``"ja"``) or a name as in :data:`LANGUAGES`
    (``"Simplified Chinese"``, the examples' own ``target_language``). Japanese and Korean need
    ``pip install 'sacrebleu[ja,ko]'`` (MeCab dictionaries).
    """
    from sacrebleu.metrics import BLEU

    names = {name.lower(): code for code, name in LANGUAGES.items()}
    language = target_language.strip()
    code = re.split(r"[-_]", names.get(language.lower(), language))[0].lower()
    tokenizer = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}.get(code, "13a")
    try:
        bleu = BLEU(tokenize=tokenizer)
    except (ImportError, RuntimeError) as error:
        raise ImportError(
            f"BLEU for {target_language} needs extra tokenizers: pip install 'sacrebleu[ja,ko]'."
        ) from error
    hypotheses = _aligned(examples, predictions)
    return float(bleu.corpus_score(hypotheses, [[e.target for e in examples]]).score)


# -- loaders ------------------------------------------------------------------------------------------


def _language(code: str) -> str:
    return LANGUAGES.get(code, LANGUAGES.get(code.split("_")[0], code))


def load_wmt24pp(
    pair: str = "en-de_DE",
    *,
    data_files: str | os.PathLike[str] | None = None,
    hub: str | None = "google/wmt24pp",
    limit: int | None = None,
    skip_bad_source: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dspy.Example]:
    """WMT24++ rows (``source``, ``target``, ``lp``...) as examples.

    Looks for ``wmt24pp/<pair>.jsonl`` in the data directory when ``data_files`` is not given, then
    the hub dataset ``hub`` (configuration ``pair``). The canary row and rows flagged
    ``is_bad_source`` are skipped (WMT24++ marks sources that are not fit to translate).
    """
    limit = check_limit(limit)
    files = data_files or find_data_file(f"wmt24pp/{pair}.jsonl")
    rows = load_rows(files, hub=None if files else hub, hub_config=pair, cache_dir=cache_dir)
    source_code, _, target_code = pair.partition("-")
    examples = []
    for row in rows:
        if limit is not None and len(examples) >= limit:
            break
        if row.get("domain") == "canary" or (skip_bad_source and row.get("is_bad_source")):
            continue
        lp = row.get("lp") or pair
        src, _, tgt = lp.partition("-")
        example = dspy.Example(
            source=row["source"],
            source_language=_language(src or source_code),
            target_language=_language(tgt or target_code),
            target=row["target"],
            segment_id=row.get("segment_id"),
            document_id=row.get("document_id"),
            domain=row.get("domain"),
        ).with_inputs(*_INPUTS)
        examples.append(example)
    return examples


def load_wmt_general(
    directory: str | os.PathLike[str] | None = None,
    *,
    pair: str = "en-de",
    systems: Sequence[str] | None = None,
    limit: int | None = None,
    max_source_chars: int | None = None,
) -> list[dspy.Example]:
    """The WMT24 general-task text release of one language pair, with every system's output.

    Args:
        directory: The pair's directory (``source.txt``, ``reference.refA.txt``, ``documents.docs``,
            ``system-outputs/<system>.txt``); default ``wmt24_general/<pair>`` in the data directory.
        pair: The language pair, e.g. ``"en-de"`` (sets the language names).
        systems: Systems whose outputs to attach (default: every file in ``system-outputs/``).
        limit: Keep at most this many segments (after filtering).
        max_source_chars: Skip segments with longer sources (short segments make cheap benchmarks).

    Returns:
        Examples with inputs ``source``/``source_language``/``target_language``, the reference as
        ``target``, ``document_id``/``domain``/``line``, and ``system_outputs`` (system -> text): the
        candidates a :func:`~fusion_dspy.programs.recorded.recorded_teachers` pool replays. The canary
        line is skipped.
    """
    limit = check_limit(limit)
    if directory is None:
        directory = find_data_file(f"wmt24_general/{pair}")
        if directory is None:
            raise FileNotFoundError(
                f"No WMT24 general data for {pair}: pass directory=... or set $FUSION_DSPY_DATA_DIR to a "
                f"directory holding wmt24_general/{pair}/."
            )
    root = Path(directory)
    sources = _lines(root / "source.txt")
    references = _lines(root / "reference.refA.txt")
    documents = _lines(root / "documents.docs") if (root / "documents.docs").exists() else [""] * len(sources)
    output_dir = root / "system-outputs"
    names = list(systems) if systems is not None else sorted(p.stem for p in output_dir.glob("*.txt"))
    outputs = {name: _lines(output_dir / f"{name}.txt") for name in names}
    for name, lines in {"reference.refA.txt": references, "documents.docs": documents, **outputs}.items():
        if len(lines) != len(sources):
            raise ValueError(f"{root}: {name} has {len(lines)} lines but source.txt has {len(sources)}.")
    src_code, _, tgt_code = pair.partition("-")
    examples = []
    for line, source in enumerate(sources):
        if limit is not None and len(examples) >= limit:
            break
        domain, _, document = documents[line].partition("\t")
        if domain == "canary" or source.startswith("CANARY GUID"):
            continue
        if max_source_chars is not None and len(source) > max_source_chars:
            continue
        example = dspy.Example(
            source=source,
            source_language=_language(src_code),
            target_language=_language(tgt_code),
            target=references[line],
            document_id=document,
            domain=domain,
            line=line,
            system_outputs={name: outputs[name][line] for name in names},
        ).with_inputs(*_INPUTS)
        examples.append(example)
    return examples


def _lines(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    # Not str.splitlines(): it also splits on U+2028 and friends, which occur inside WMT segments.
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line.removesuffix("\r") for line in lines] if text else []


def load_translation(data: str | os.PathLike[str] | None = None, *, limit: int | None = None) -> list[dspy.Example]:
    """Load translation examples from whatever ``data`` names.

    ``None``: WMT24++ en-de from the data directory (or the hub); a directory with ``source.txt``: the
    WMT24 general text format; a ``.jsonl`` file: WMT24++ rows; anything else: a WMT24++ pair name
    (``"en-fr_FR"``).
    """
    if data is None:
        return load_wmt24pp(limit=limit)
    path = Path(data)
    if path.is_dir():
        pair = path.name if "-" in path.name else "en-de"
        return load_wmt_general(path, pair=pair, limit=limit)
    if path.suffix in (".jsonl", ".json"):
        pair = path.stem if "-" in path.stem else "en-de_DE"
        return load_wmt24pp(pair, data_files=path, limit=limit)
    return load_wmt24pp(str(data), limit=limit)


TASK = TaskSpec(
    name="translate",
    signature=Translate,
    metric=chrf,
    metric_name="chrF",
    load=load_translation,
    selectors=("mbr", "judge"),
    corpus_metric=corpus_chrf,
)
