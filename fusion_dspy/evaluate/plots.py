"""PNG plots of an :class:`~fusion_dspy.evaluate.report.EvalReport` (matplotlib, Agg backend).

Two questions the paper's reviewers asked: does fusion reach Best-of-N quality with fewer samples
(sample efficiency), and what does each point of quality cost (cost-quality)?
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from fusion_dspy.evaluate.report import EvalReport

__all__ = ["plot_cost_quality", "plot_methods", "plot_sample_efficiency"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_sample_efficiency(report: EvalReport, path: str | os.PathLike[str]) -> None:
    """Metric vs N per method (95% CI bars); single teachers as dashed horizontal lines."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    methods = [m for m in dict.fromkeys(s.method for s in report.methods) if not m.startswith("single:")]
    for position, method in enumerate(methods):
        points = sorted((s for s in report.methods if s.method == method), key=lambda s: s.n)
        # Nudge each method sideways (log axis) so error bars at the same N do not hide each other.
        nudge = 2 ** (0.04 * (position - (len(methods) - 1) / 2))
        xs = [s.n * nudge for s in points]
        ys = [s.mean for s in points]
        errors = [[s.mean - s.ci_low for s in points], [s.ci_high - s.mean for s in points]]
        style = {"fusion": "-o", "oracle": ":^", "random": ":v"}.get(method, "--s")
        axes.errorbar(xs, ys, yerr=errors, fmt=style, capsize=3, label=method)
    for single in (s for s in report.methods if s.method.startswith("single:")):
        axes.axhline(single.mean, linestyle="--", linewidth=0.8, alpha=0.6, color="gray")
        axes.annotate(single.method, (report.ns[0], single.mean), fontsize=7, color="gray",
                      xytext=(2, 2), textcoords="offset points")
    axes.set_xscale("log", base=2)
    axes.set_xticks(report.ns, [str(n) for n in report.ns])
    axes.set_xlabel("N (candidates)")
    axes.set_ylabel(report.metric_name)
    axes.set_title(f"{report.task}: sample efficiency ({report.examples} examples, 95% CI)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_cost_quality(report: EvalReport, path: str | os.PathLike[str]) -> None:
    """Metric vs tokens per example and vs time per example; one point per method and N."""
    plt = _pyplot()
    figure, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axes, attribute, label in ((by_tokens, "total_tokens", "tokens per example"),
                                   (by_time, "time_s", "LM seconds per example")):
        for method in dict.fromkeys(s.method for s in report.methods):
            points = sorted((s for s in report.methods if s.method == method), key=lambda s: s.n)
            xs = [max(getattr(s, attribute), 1e-3) for s in points]
            axes.plot(xs, [s.mean for s in points], "o-" if len(points) > 1 else "o", label=method)
            for s, x in zip(points, xs, strict=True):
                axes.annotate(f"N={s.n}", (x, s.mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
        # Replayed candidates cost 0 tokens: symlog keeps them on the tokens axis; times are always > 0.
        if attribute == "total_tokens":
            axes.set_xscale("symlog", linthresh=1.0)
        else:
            axes.set_xscale("log")
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
    by_tokens.set_ylabel(report.metric_name)
    by_time.legend(fontsize=7, loc="best")
    figure.suptitle(f"{report.task}: cost vs quality")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_methods(report: EvalReport, path: str | os.PathLike[str]) -> None:
    """One horizontal bar per method and N: the metric with its 95% CI, and the tokens it cost, side by side.

    The plot to read at a glance: which method scored best, and what each one paid for it.
    """
    plt = _pyplot()
    rows = list(report.methods)[::-1]  # matplotlib draws bottom-up: keep the report's order top-down
    labels = [s.method if s.method.startswith(("single:", "alone:")) else f"{s.method} (N={s.n})" for s in rows]
    height = max(2.5, 0.42 * len(rows) + 1.2)
    figure, (quality, cost) = plt.subplots(1, 2, figsize=(10, height), sharey=True,
                                           gridspec_kw={"width_ratios": [3, 2]})
    ys = range(len(rows))
    colors = ["tab:red" if s.method == "fusion" else "tab:gray" if s.method in ("oracle", "random") else
              "tab:blue" if s.method.startswith("bon-") else "tab:green" for s in rows]
    errors = [[s.mean - s.ci_low for s in rows], [s.ci_high - s.mean for s in rows]]
    quality.barh(ys, [s.mean for s in rows], xerr=errors, color=colors, alpha=0.85, capsize=3)
    for y, s in zip(ys, rows, strict=True):
        quality.annotate(f"{s.mean:.2f}", (s.ci_high, y), xytext=(4, 0), textcoords="offset points", va="center",
                         fontsize=9)
    quality.set_yticks(list(ys), labels)
    quality.set_xlabel(f"{report.metric_name} (95% CI)")
    quality.set_xlim(0, max(1.0, max(s.ci_high for s in rows) * 1.15))
    cost.barh(ys, [s.total_tokens for s in rows], color=colors, alpha=0.5)
    for y, s in zip(ys, rows, strict=True):
        cost.annotate(f"{s.total_tokens:.0f}", (s.total_tokens, y), xytext=(4, 0), textcoords="offset points",
                      va="center", fontsize=9)
    cost.set_xlabel("tokens per example")
    cost.set_xlim(0, max(s.total_tokens for s in rows) * 1.25 or 1)
    for axes in (quality, cost):
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle(f"{report.task}: {report.examples} examples, every method on the same candidates")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
