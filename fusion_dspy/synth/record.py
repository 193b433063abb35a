"""One synthetic-data record: a prompt, every candidate, the fused and selected outputs, provenance.

Values whose type depends on the task (inputs, typed outputs) are stored as JSON strings, so every
record has the same Arrow schema whatever the signature; rendered text columns (``prompt``,
``fused_output``, ``selected_output``, ``candidates[].output``) are there for reading and SFT.

Costs: ``input_tokens``, ``output_tokens`` and ``calls`` are the fused answer's (every candidate, at its
original cost, and the fusor). The ``also_select`` pick re-uses those candidates; its selector's own LM
calls (an LLM judge, USC; none for mbr, majority) are in ``selector_input_tokens``,
``selector_output_tokens`` and ``selector_calls`` (0 without ``also_select``). A record's cost is the sum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from fusion_dspy.candidate import render_outputs
from fusion_dspy.candidate import render_value
from fusion_dspy.report import FusionReport
from fusion_dspy.report import TokenUsage
from fusion_dspy.synth.prompts import Prompt

__all__ = ["build_record", "render_prompt", "to_chat"]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=render_value)


def render_prompt(inputs: Mapping[str, Any]) -> str:
    """The prompt as text: a single input verbatim, several as ``name: value`` lines."""
    if len(inputs) == 1:
        return render_value(next(iter(inputs.values())))
    return "\n".join(f"{name}: {render_value(value)}" for name, value in inputs.items())


def build_record(
    *,
    prompt: Prompt,
    output_fields: Sequence[str],
    fused: Mapping[str, Any],
    report: FusionReport,
    selected: Mapping[str, Any] | None,
    selection_report: FusionReport | None,
    config_hash: str,
) -> dict[str, Any]:
    """The dataset row for one prompt (see the module docstring for the column conventions)."""
    fields = tuple(output_fields)
    candidates = []
    for record in report.candidates:
        usage = sum(record.usage.values(), start=TokenUsage())
        candidates.append({
            "index": record.index,
            "teacher": record.teacher,
            "sample": record.sample,
            "temperature": record.temperature,
            "seed": record.seed,
            "output": render_outputs(record.outputs, fields) if record.outputs is not None else None,
            "outputs_json": _json(record.outputs) if record.outputs is not None else None,
            "error": record.error,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        })
    total = report.total_usage
    selection = selection_report.selection if selection_report is not None else None
    picked = sum(selection.usage.values(), start=TokenUsage()) if selection is not None else TokenUsage()
    return {
        "id": prompt.id,
        "index": prompt.index,
        "prompt": render_prompt(prompt.inputs),
        "inputs_json": _json(prompt.inputs),
        "fused_output": render_outputs(fused, fields),
        "fused_json": _json(dict(fused)),
        "path": report.path,
        "fallback": report.fallback,
        "comparison": report.fusor.comparison if report.fusor is not None else None,
        "fusor": report.fusor.lm if report.fusor is not None else None,
        "attribution": report.attribution,
        "selected_output": render_outputs(selected, fields) if selected is not None else None,
        "selected_json": _json(dict(selected)) if selected is not None else None,
        "selector": selection.selector if selection is not None else None,
        "selected_index": selection.index if selection is not None else None,
        "candidates": candidates,
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "calls": total.calls,
        "selector_input_tokens": picked.input_tokens,
        "selector_output_tokens": picked.output_tokens,
        "selector_calls": picked.calls,
        "wall_time_s": report.wall_time_s,
        "config_hash": config_hash,
        "report_json": report.model_dump_json(),
    }


def to_chat(record: Mapping[str, Any], *, output: str = "fused_output", system: str | None = None) -> dict[str, Any]:
    """An SFT example in the common ``messages`` format: the prompt, then the fused answer."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages += [
        {"role": "user", "content": record["prompt"]},
        {"role": "assistant", "content": record[output]},
    ]
    return {"id": record["id"], "messages": messages}
