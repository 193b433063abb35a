"""The evaluation report: per-example results, per-method summaries, JSON and a Markdown table."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic import Field

from fusion_dspy.evaluate.stats import bootstrap_ci
from fusion_dspy.evaluate.stats import paired_bootstrap
from fusion_dspy.report import TokenUsage

__all__ = ["GUARD_SUFFIX", "EvalReport", "MethodResult", "MethodSummary", "summarize"]

_logger = logging.getLogger(__name__)

#: Suffix of the selection guard's methods (``fusion+guard``, ``fusion:<strategy>+guard``).
GUARD_SUFFIX = "+guard"

#: Corpus metrics are recomputed per resample; fewer resamples keep that affordable.
_CORPUS_RESAMPLES = 200


class MethodResult(BaseModel):
    """One method's outcome on one example at one N.

    ``time_s`` is the summed latency of the LM calls the method needs (candidates, fusor, judge):
    the wall time on a serial backend such as one llama.cpp model, an upper bound with parallel APIs.
    ``guard_rule`` is :data:`fusion_dspy.guard.GUARD_RULE` on a ``+guard`` result (the harness redoes
    one made under an older rule).
    """

    example: str
    method: str
    n: int
    score: float
    output: dict[str, Any] | None = None
    path: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    time_s: float = 0.0
    attribution: float | None = None
    error: str | None = None
    comparison: str | None = None
    guard_rule: str | None = None


class MethodSummary(BaseModel):
    """One method at one N over all examples: mean with CI, paired test vs the baseline, costs."""

    method: str
    n: int
    count: int
    mean: float
    ci_low: float
    ci_high: float
    corpus: float | None = None
    corpus_ci_low: float | None = None
    corpus_ci_high: float | None = None
    corpus_error: str | None = None
    """Why the corpus metric gave no score for this method (it raised), or ``None``."""
    vs_baseline: dict[str, float] | None = None
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    calls: float = 0.0
    time_s: float = 0.0
    attribution: float | None = None
    paths: dict[str, int] = Field(default_factory=dict)
    errors: int = 0
    faults: dict[str, int] = Field(default_factory=dict)
    """The recorded faults (``MethodResult.error``) and on how many examples each occurred."""

    @property
    def total_tokens(self) -> float:
        return self.input_tokens + self.output_tokens


class EvalReport(BaseModel):
    """Everything ``fusion-dspy eval`` reports, JSON-serialisable."""

    task: str
    metric_name: str
    baseline: str
    ns: list[int]
    examples: int
    config: dict[str, Any] = Field(default_factory=dict)
    methods: list[MethodSummary]

    def get(self, method: str, n: int) -> MethodSummary | None:
        """The summary of ``method`` at ``n`` (single samples are at ``n=1``)."""
        return next((m for m in self.methods if m.method == method and m.n == n), None)

    def to_markdown(self, *, times: bool = True) -> str:
        """A Markdown table: one row per method and N (``times=False`` leaves out the wall-time column,
        the one value that differs between two runs of a seeded local evaluation)."""
        has_corpus = any(m.corpus is not None for m in self.methods)
        header = ["method", "N", f"{self.metric_name} mean [95% CI]"]
        if has_corpus:
            header.append("corpus [95% CI]")
        header += [f"Δ vs {self.baseline} [95% CI]", "p boot", "p sign", "W/T/L", "tokens/ex"]
        header += ["time s/ex", "copied"] if times else ["copied"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for m in self.methods:
            row = [m.method, str(m.n), f"{m.mean:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"]
            if has_corpus:
                corpus = "failed" if m.corpus_error else "" if m.corpus is None else (
                f"{m.corpus:.2f} [{m.corpus_ci_low:.2f}, {m.corpus_ci_high:.2f}]")
                row.append(corpus)
            v = m.vs_baseline
            if v is None:
                row += ["", "", "", ""]
            else:
                row += [
                    f"{v['diff']:+.2f} [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]",
                    f"{v['p_bootstrap']:.3f}",
                    f"{v['p_sign']:.3f}",
                    f"{int(v['wins'])}/{int(v['ties'])}/{int(v['losses'])}",
                ]
            row += [f"{m.total_tokens:.0f}", *([f"{m.time_s:.2f}"] if times else [])]
            row.append("" if m.attribution is None else f"{100 * m.attribution:.0f}%")
            lines.append("| " + " | ".join(row) + " |")
        notes = [
            f"{self.examples} examples; task `{self.task}`. Δ, p and W/T/L are paired against `{self.baseline}` "
            "at the same N (bootstrap over examples; exact sign test).",
            "tokens/ex counts every LM call the method needs (candidates at their original cost)"
            + ("; time s/ex sums those calls' latencies" if times else "")
            + ". `copied` is the share of the fused text copied from the candidates (difflib).",
        ]
        extra = "\n".join(part for part in (self.guard_summary(), self.fault_summary()) if part)
        return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n" + (f"\n{extra}\n" if extra else "")

    def fault_summary(self) -> str:
        """The faults each method recorded, with counts, and a failed corpus metric; ``""`` when none did.

        A fault does not drop the example: its row scores what the method returned instead (a
        fusion whose fusor failed returns the selection), so the table alone would hide it.
        """
        lines = []
        for m in self.methods:
            if m.corpus_error:
                lines.append(f"`{m.method}` N={m.n}: the corpus metric failed ({_shorten(m.corpus_error)}); "
                             "no corpus score.")
            if m.faults:
                common = sorted(m.faults.items(), key=lambda kv: (-kv[1], kv[0]))
                told = "; ".join(f"{count} x {_shorten(error)}" for error, count in common[:3])
                told += f"; and {len(common) - 3} other kinds" if len(common) > 3 else ""
                lines.append(f"`{m.method}` N={m.n}: {m.errors} of {m.count} examples recorded a fault ({told}); "
                             "their rows score what the method returned instead.")
        return "\n".join(lines)

    def guard_summary(self) -> str:
        """How often each selection-guard method (``...+guard``) kept the fused answer; ``""`` without one.

        Read from the paths: ``fuse`` kept the fused answer, ``select`` returned the baseline
        selector's pick (:mod:`fusion_dspy.guard`). An example whose fusion did not fuse (a fallback to select, a single
        candidate, no output) had nothing to guard and keeps its fusion's path, so the guarded
        method's own row (same N) tells those apart.
        """
        lines = []
        for m in self.methods:
            if not m.method.endswith(GUARD_SUFFIX):
                continue
            fused = self.get(m.method.removesuffix(GUARD_SUFFIX), m.n)
            kept = m.paths.get("fuse", 0)
            replaced = max(0, m.paths.get("select", 0) - (fused.paths.get("select", 0) if fused else 0))
            passed = max(0, m.count - kept - replaced)
            if kept + replaced:
                line = (f"`{m.method}` N={m.n}: kept the fused answer on {kept} of {kept + replaced} examples "
                        f"({100 * kept / (kept + replaced):.0f}%), else `{self.baseline}`'s pick")
                lines.append(line + (f"; {passed} more had no fused answer to guard." if passed else "."))
            else:
                lines.append(f"`{m.method}` N={m.n}: no fused answer to guard ({passed} examples passed through).")
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike[str], *, plots: bool = True) -> None:
        """Write ``report.json``, ``report.md`` and (with matplotlib installed) the three PNG plots."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(self.model_dump(mode="json"), indent=2), encoding="utf-8")
        (out / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        if plots and not self.methods:
            _logger.info("no plots: no method has a result yet")
        elif plots:
            try:
                from fusion_dspy.evaluate.plots import plot_cost_quality
                from fusion_dspy.evaluate.plots import plot_methods
                from fusion_dspy.evaluate.plots import plot_sample_efficiency
            except ImportError as error:  # pragma: no cover - depends on the environment
                _logger.warning("no plots (%s); pip install 'fusion-dspy[plots]'", error)
                return
            plot_sample_efficiency(self, out / "sample_efficiency.png")
            plot_cost_quality(self, out / "cost_quality.png")
            plot_methods(self, out / "methods.png")


def _corpus_ci(
    corpus_metric: Callable[[Sequence[Any], Sequence[Any]], float],
    examples: list[Any],
    predictions: list[Any],
    resamples: int,
) -> tuple[float, float, float]:
    """Bootstrap a corpus metric over examples.

    A metric with per-example sufficient statistics (``statistics(examples, predictions)`` and
    ``from_statistics(totals)``, like corpus chrF) is resampled by summing statistics rows; any other
    corpus metric is recomputed per resample, with fewer resamples to stay affordable.
    """
    import numpy

    values = [0.0] * len(examples)
    if hasattr(corpus_metric, "statistics") and hasattr(corpus_metric, "from_statistics"):
        rows = numpy.asarray(corpus_metric.statistics(examples, predictions))

        def from_rows(indices: Sequence[int]) -> float:
            return corpus_metric.from_statistics(rows[list(indices)].sum(axis=0).tolist())

        return bootstrap_ci(values, statistic=from_rows, resamples=resamples)

    def recompute(indices: Sequence[int]) -> float:
        return corpus_metric([examples[i] for i in indices], [predictions[i] for i in indices])

    return bootstrap_ci(values, statistic=recompute, resamples=min(resamples, _CORPUS_RESAMPLES))


def _shorten(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _order(key: tuple[str, int]) -> tuple[int, str, int]:
    method, n = key
    rank = 0 if method.startswith("single:") else 1 if method == "random" else 3 if method == "oracle" else 2
    return rank, method if rank != 2 else ("0" if method == "fusion" else method), n


def summarize(
    *,
    task: str,
    metric_name: str,
    examples: Sequence[Any],
    ids: Sequence[str],
    results: Mapping[str, Mapping[tuple[str, int], MethodResult]],
    ns: Sequence[int],
    baseline: str,
    corpus_metric: Callable[[Sequence[Any], Sequence[Any]], float] | None = None,
    resamples: int = 2000,
    config: dict[str, Any] | None = None,
) -> EvalReport:
    """Turn per-example results into per-method summaries (examples without a result are left out).

    ``examples`` in the report counts the examples that have results, so a partial (time-boxed or
    interrupted) run reports what it actually measured.
    """
    import dspy

    keys = sorted({key for per_example in results.values() for key in per_example}, key=_order)
    summaries = []
    for method, n in keys:
        rows = [(i, results[eid][(method, n)]) for i, eid in enumerate(ids) if (method, n) in results.get(eid, {})]
        if not rows:
            continue
        scores = [r.score for _, r in rows]
        mean, low, high = bootstrap_ci(scores, resamples=resamples)
        summary = MethodSummary(
            method=method, n=n, count=len(rows), mean=mean, ci_low=low, ci_high=high,
            input_tokens=sum(r.usage.input_tokens for _, r in rows) / len(rows),
            output_tokens=sum(r.usage.output_tokens for _, r in rows) / len(rows),
            calls=sum(r.usage.calls for _, r in rows) / len(rows),
            time_s=sum(r.time_s for _, r in rows) / len(rows),
            errors=sum(r.error is not None for _, r in rows),
        )
        attributions = [r.attribution for _, r in rows if r.attribution is not None]
        if attributions:
            summary.attribution = sum(attributions) / len(attributions)
        for _, r in rows:
            if r.path:
                summary.paths[r.path] = summary.paths.get(r.path, 0) + 1
            if r.error is not None:
                summary.faults[r.error] = summary.faults.get(r.error, 0) + 1
        if corpus_metric is not None:
            chosen = [examples[i] for i, _ in rows]
            predictions = [dspy.Prediction(**(r.output or {})) for _, r in rows]
            try:
                summary.corpus, summary.corpus_ci_low, summary.corpus_ci_high = _corpus_ci(
                    corpus_metric, chosen, predictions, resamples
                )
            except Exception as error:  # like a failing per-example metric: reported, not the end of the report
                summary.corpus_error = f"{type(error).__name__}: {error}"
                _logger.error("corpus metric failed on %s N=%d (%s); no corpus score", method, n,
                              summary.corpus_error)
        if method != baseline and not method.startswith("single:"):
            paired = [
                (r.score, results[ids[i]][(baseline, n)].score)
                for i, r in rows
                if (baseline, n) in results.get(ids[i], {})
            ]
            if paired:
                comparison = paired_bootstrap([a for a, _ in paired], [b for _, b in paired], resamples=resamples)
                summary.vs_baseline = {k: float(v) for k, v in dataclasses.asdict(comparison).items()}
        summaries.append(summary)
    return EvalReport(
        task=task,
        metric_name=metric_name,
        baseline=baseline,
        ns=list(ns),
        examples=sum(1 for eid in ids if results.get(eid)),
        config=config or {},
        methods=summaries,
    )
