"""Grounded proposals of fusor instructions, as MIPROv2 grounds its instruction proposals.

An LM reads the task signature, a few training examples with their reference outputs, and the
candidate sets the teacher pool actually wrote for them, and writes a fusor instruction tailored
to the errors it sees (one call per proposal, each with a different tip and rollout). The
candidate sets are drawn through the bank, so they cost teacher calls once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from fusion_dspy.optimizers.fuses import apply_settings
from fusion_dspy.optimizers.fuses import find_fuses

from fusion_dspy import Fuse
from fusion_dspy import FuseSettings
from fusion_dspy.candidate import render_value

__all__ = ["InstructionProposer", "ProposeFusorInstruction", "TIPS"]

_logger = logging.getLogger(__name__)

#: Directions for successive proposals, so they differ in intent and not only in wording.
TIPS = (
    "Focus on correctness: check each candidate against the task and keep only what is right.",
    "When one candidate is clearly right, copy it rather than rewriting it.",
    "When the candidates disagree on a final answer, work it out yourself before answering.",
    "Keep the answer short and in exactly the format the task expects.",
    "Treat agreement among candidates as evidence, not proof; a shared mistake is still a mistake.",
)

_MAX_CHARS = 600


class ProposeFusorInstruction(dspy.Signature):
    """Write the instruction for a fusor: an assistant that reads a task and several candidate answers
    written by other models, and writes one better answer. Study the task, the examples (inputs,
    reference output and the candidates the models wrote) and the current instruction. Write one new
    instruction, a few sentences long, that would make the fusor's answers match the references more
    often: say concretely what to check, what to keep and what to discard for this kind of task.
    Do not quote or mention the examples themselves."""

    task: str = dspy.InputField(desc="The task's input and output fields and its instructions.")
    examples: str = dspy.InputField(desc="Training examples: inputs, reference output, and the candidates.")
    current_instruction: str = dspy.InputField(desc="The fusor instruction used so far.")
    tip: str = dspy.InputField(desc="A direction for the new instruction.")
    instruction: str = dspy.OutputField(desc="The new fusor instruction, plain text.")


class InstructionProposer:
    """Proposes fusor instructions per Fuse from the task and real candidate sets.

    Args:
        lm: The LM that writes proposals (``None``: the configured LM). A strong model helps most.
        num_instructions: Proposals per Fuse.
        num_examples: Training examples shown per proposal.
        temperature: Sampling temperature of the proposals (high, for variety).
        seed: Makes the rollouts, hence DSPy's cache entries, reproducible.
    """

    def __init__(
        self,
        *,
        lm: dspy.BaseLM | None = None,
        num_instructions: int = 3,
        num_examples: int = 3,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        if num_instructions < 0 or num_examples < 1:
            raise ValueError("num_instructions must be >= 0 and num_examples >= 1.")
        self.lm = lm
        self.num_instructions = num_instructions
        self.num_examples = num_examples
        self.temperature = temperature
        self.seed = seed
        self.predictor = dspy.Predict(ProposeFusorInstruction)

    def propose(
        self, template: dspy.Module, trainset: Sequence[dspy.Example], settings: Mapping[str, FuseSettings]
    ) -> dict[str, list[str]]:
        """New instructions per Fuse path (the Fuse's current instruction is not included).

        ``settings`` configures the program that draws the candidate sets; they should plan
        several teachers and use ``mode="select"`` so no fusor call is spent here.
        """
        if self.num_instructions == 0 or not trainset:
            return {}
        program = apply_settings(template.deepcopy(), settings)
        fuses = find_fuses(program)
        collector = _CallCollector({id(fuse): path for path, fuse in fuses.items()})
        shown = list(trainset[: self.num_examples])
        for example in shown:
            with dspy.context(callbacks=[*(dspy.settings.callbacks or []), collector]):
                try:
                    program(**example.inputs())
                except Exception as exc:  # A failing example only means one grounding example less.
                    _logger.warning("Proposer: the program failed on a training example (%s); skipping it.", exc)
        proposals: dict[str, list[str]] = {}
        for path, fuse in fuses.items():
            calls = collector.calls.get(path, [])
            task = _describe_task(fuse)
            examples = "\n\n".join(_describe_call(i, inputs, outputs, shown[i] if i < len(shown) else None, fuse)
                                   for i, (inputs, outputs) in enumerate(calls)) or "(no examples ran)"
            texts: list[str] = []
            for k in range(self.num_instructions):
                text = self._one(task, examples, fuse.prompt.instruction, TIPS[k % len(TIPS)], k)
                if text and text not in texts and text != fuse.prompt.instruction:
                    texts.append(text)
            proposals[path] = texts
            _logger.info("Proposer: %d fusor instruction(s) for %s.", len(texts), path)
        return proposals

    def _one(self, task: str, examples: str, current: str, tip: str, k: int) -> str | None:
        kwargs: dict[str, Any] = {"config": {"rollout_id": self.seed * 1000 + k, "temperature": self.temperature}}
        if self.lm is not None:
            kwargs["lm"] = self.lm
        try:
            prediction = self.predictor(task=task, examples=examples, current_instruction=current, tip=tip, **kwargs)
            text = prediction.instruction
        except Exception as exc:  # One failed proposal must not stop the study.
            _logger.warning("Proposer: proposal %d failed (%s: %s).", k, type(exc).__name__, exc)
            return None
        text = (text or "").strip()
        return text or None


class _CallCollector(BaseCallback):
    """Records (inputs, candidate outputs) of every call of the tracked Fuse modules."""

    def __init__(self, paths: Mapping[int, str]) -> None:
        self.paths = paths
        self.calls: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}
        self._open: dict[str, tuple[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if isinstance(instance, Fuse) and id(instance) in self.paths:
            with self._lock:
                self._open[call_id] = (self.paths[id(instance)], dict(inputs.get("kwargs", inputs)))

    def on_module_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        with self._lock:
            opened = self._open.pop(call_id, None)
        report = getattr(outputs, "fusion", None)
        if opened is None or report is None:
            return
        path, inputs = opened
        candidates = [dict(c.outputs) for c in report.candidates if c.outputs is not None]
        with self._lock:
            self.calls.setdefault(path, []).append((inputs, candidates))


def _describe_task(fuse: Fuse) -> str:
    signature = fuse.signature
    lines = [f"Signature: {signature.signature}"]
    for name, field in {**signature.input_fields, **signature.output_fields}.items():
        desc = field.json_schema_extra.get("desc", "") if field.json_schema_extra else ""
        lines.append(f"- {name}: {desc}")
    if signature.instructions:
        lines.append(f"Instructions: {signature.instructions}")
    return "\n".join(lines)


def _describe_call(i: int, inputs: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
                   example: dspy.Example | None, fuse: Fuse) -> str:
    lines = [f"Example {i + 1}"]
    for name, value in inputs.items():
        lines.append(f"{name}: {_clip(render_value(value))}")
    if example is not None:
        labels = {k: v for k, v in example.labels().items() if k in fuse.signature.output_fields}
        if labels:
            lines.append("Reference: " + "; ".join(f"{k} = {_clip(render_value(v))}" for k, v in labels.items()))
    for j, outputs in enumerate(candidates, 1):
        lines.append(f"Candidate {j}: " + "; ".join(f"{k} = {_clip(render_value(v))}" for k, v in outputs.items()))
    return "\n".join(lines)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_CHARS else text[:_MAX_CHARS] + " [...]"
