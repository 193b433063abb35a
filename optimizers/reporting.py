"""Read a finished study: trial table, best configurations, parameter importances, PNG plots.

Everything comes from the study's storage (trial values and JSON user attributes), so a report
can be built for any study, including one run by other processes or machines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from fusion_dspy.optimizers.bank import BankStats
from optuna.trial import TrialState

__all__ = ["StudyReport", "build_report", "describe_config", "program_errors"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class StudyReport:
    """A study summarised for people.

    Attributes:
        table: One line per trial: state, quality, cost, LM calls made, configuration.
        best: The best configurations (single objective: top trials by quality, cheaper first on
            ties; two objectives: the Pareto front), as dicts.
        importances: Parameter importances per objective (``{"quality": {param: share}}``).
        plots: Written PNG files by name.
        bank: The candidate bank's counters, when known.
        confirmed: The full-valset confirmation of the best configurations (single objective).
        errors: Program errors (examples that raised and scored 0): ``{"examples": count,
            "trials": count, "first": "Type: message"}``; ``None`` when there were none.
    """

    table: str
    best: list[dict[str, Any]]
    importances: dict[str, dict[str, float]]
    plots: dict[str, Path]
    bank: BankStats | None = None
    confirmed: list[dict[str, Any]] | None = None
    errors: dict[str, Any] | None = None

    def __str__(self) -> str:
        lines = [self.table]
        if self.errors:
            lines.append(f"program errors: {self.errors['examples']} example(s) in {self.errors['trials']} trial(s) "
                         f"raised and scored 0; first: {self.errors['first']}")
        if self.confirmed:
            lines.append("confirmed on the full valset: " + ", ".join(
                f"trial {c['trial']}: quality {c['quality']:.4f} cost {c['cost']:.1f}" + _choice_note(c)
                for c in self.confirmed))
        for objective, scores in self.importances.items():
            top = sorted(scores.items(), key=lambda kv: -kv[1])[:6]
            lines.append(f"importance for {objective}: " + ", ".join(f"{k}={v:.2f}" for k, v in top))
        if self.bank is not None:
            bank = self.bank
            lines.append(f"bank: {bank.size} draws, {bank.hits} hits, {bank.generated} generated here; "
                         f"{bank.fusor_size} fusor replies, {bank.fusor_hits} re-used, {bank.fusor_stored} stored here")
        for name, path in self.plots.items():
            lines.append(f"plot {name}: {path}")
        return "\n".join(lines)


def describe_config(config: Mapping[str, Mapping[str, Any]]) -> str:
    """A compact one-line description of per-Fuse settings, e.g. ``answer: N=3 a+b fuse by big``."""
    parts = []
    for path, s in config.items():
        used = s["teachers"][: s["n"]]  # With N below the pool size only the first teachers are drawn.
        text = f"N={s['n']} {'+'.join(used)} {s['mode'] if s['n'] > 1 else 'alone'}"
        if s["n"] > 1:
            if s["mode"] == "select":
                text += f"({s['selector']})"
            else:
                text += f" by {s['fusor']}"
                if s["mode"] == "auto":
                    text += f" agree>={s['agree']}"
        parts.append(text if len(config) == 1 else f"{path}: {text}")
    return "; ".join(parts)


def build_report(
    study: optuna.Study,
    *,
    bank: BankStats | None = None,
    plots_dir: str | os.PathLike[str] | None = None,
    top: int = 5,
) -> StudyReport:
    """Build a :class:`StudyReport`; with ``plots_dir`` also write PNG plots (needs matplotlib)."""
    trials = study.get_trials(deepcopy=False)
    multi = len(study.directions) > 1
    header = f"{'#':>4} {'state':8} {'quality':>8} {'cost':>10} {'calls':>6} {'n_ex':>5} {'err':>4}  configuration"
    rows = [header, "-" * len(header)]
    for t in trials:
        attrs, result = t.user_attrs, t.user_attrs.get("result", {})
        partial = t.state == TrialState.COMPLETE and result.get("complete") is False
        rows.append(
            f"{t.number:>4} {'PARTIAL' if partial else t.state.name:8} {_fmt(result.get('quality'), '.4f'):>8} "
            f"{_fmt(result.get('cost'), '.1f'):>10} {result.get('lm_calls', ''):>6} {result.get('examples', ''):>5} "
            f"{result.get('errors', ''):>4}  "
            f"{describe_config(attrs['config']) if 'config' in attrs else attrs.get('infeasible', '')}"
        )
    completed = [t for t in trials if t.state == TrialState.COMPLETE and "result" in t.user_attrs]
    if multi:
        best_trials = sorted(study.best_trials, key=lambda t: t.values[1]) if completed else []
    else:
        best_trials = sorted(completed, key=lambda t: (-t.value, t.user_attrs["result"]["cost"]))[:top]
    best = [{"trial": t.number, "quality": t.user_attrs["result"]["quality"], "cost": t.user_attrs["result"]["cost"],
             "config": t.user_attrs["config"], "summary": describe_config(t.user_attrs["config"])} for t in best_trials]
    confirmed = study.user_attrs.get("fusion_dspy.confirmed")
    plots = _plots(study, Path(plots_dir)) if plots_dir is not None else {}
    return StudyReport(table="\n".join(rows), best=best, importances=_importances(study, multi), plots=plots,
                       bank=bank, confirmed=confirmed, errors=program_errors(trials))


def program_errors(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
    """Examples on which the program raised, over ``trials`` (``None`` when there were none)."""
    failing = [t.user_attrs["result"] for t in trials if t.user_attrs.get("result", {}).get("errors")]
    if not failing:
        return None
    first = next((r.get("first_error") for r in failing if r.get("first_error")), None)
    return {"examples": sum(r["errors"] for r in failing), "trials": len(failing), "first": first}


def _choice_note(confirmed: Mapping[str, Any]) -> str:
    """`` (chosen, 95% CI [a, b])`` for the chosen configuration, `` (within noise)`` for its equals."""
    if confirmed.get("chosen"):
        return f" (chosen, 95% CI [{confirmed['ci_low']:.4f}, {confirmed['ci_high']:.4f}])"
    return " (within noise of the best)" if confirmed.get("within_noise") else ""


def _importances(study: optuna.Study, multi: bool) -> dict[str, dict[str, float]]:
    targets = {"quality": (lambda t: t.values[0])}
    if multi:
        targets["cost"] = lambda t: t.values[1]
    out = {}
    for name, target in targets.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = dict(optuna.importance.get_param_importances(study, target=target))
        except (RuntimeError, ValueError, ZeroDivisionError) as error:
            _logger.info("No parameter importances for %s yet: %s", name, error)
    return out


def _plots(study: optuna.Study, directory: Path) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ov
    except ImportError:
        _logger.warning("Plots need matplotlib: pip install 'fusion-dspy[plots]'.")
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    multi = len(study.directions) > 1
    makers: dict[str, Any] = {}
    if multi:
        makers["pareto_front"] = lambda: ov.plot_pareto_front(study, target_names=["quality", "cost"])
    else:
        makers["history"] = lambda: ov.plot_optimization_history(study)
        makers["intermediate_values"] = lambda: ov.plot_intermediate_values(study)
    makers["importances"] = lambda: ov.plot_param_importances(
        study, target=(lambda t: t.values[0]) if multi else None, target_name="quality")
    written = {}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            _logger.info("Skipped plot %s: %s", name, error)
            continue
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        path = directory / f"{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written[name] = path
    return written


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)
