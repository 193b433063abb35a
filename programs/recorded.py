"""Recorded teachers: replay pre-generated outputs (WMT system outputs, earlier runs) as a teacher pool.

Fusing existing multi-model outputs is the cheapest way to test fusion on *real, strong and diverse*
candidates: only the fusor runs live. A recorded teacher is an ordinary ``dspy.LM`` with a custom
engine (DSPy's engine contract), so it plugs into ``Teacher(...)`` and ``Fuse`` unchanged: the engine
reads the task inputs back out of the adapter's request, looks the recorded output up by them, and
answers in the adapter's own format. A missing recording is a failed candidate, never a made-up one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy

from fusion_dspy import Teacher

__all__ = ["RecordedEngine", "RecordedOutputMissingError", "recorded_lm", "recorded_teachers"]

_logger = logging.getLogger(__name__)

_FIELD_LINE = re.compile(r"^\d+\. `(?P<name>[^`]+)` \(", re.MULTILINE)
_MARKER = re.compile(
    r"\[\[ ## (?P<name>[^#\]]+?) ## \]\]\n(?P<value>.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", re.DOTALL
)
_WHITESPACE = re.compile(r"\s+")


class RecordedOutputMissingError(LookupError):
    """The recording has no output for the request's inputs (the candidate is dropped, not invented)."""


def _key(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(_WHITESPACE.sub(" ", str(v)).strip() for v in values)


class RecordedEngine:
    """A DSPy engine that answers from a table of recorded outputs.

    Args:
        records: ``{inputs: outputs}``. A key is the value of the single ``key_fields`` field or a tuple
            of values, one per key field. An output is a dict of output field values, or a string for
            tasks with one output field (or for ``output_field``).
        key_fields: The input fields that identify a request (e.g. ``("source",)``). Values are compared
            after collapsing whitespace, since adapters may re-flow it.
        output_field: The output field a string recording fills; default: the task's only output field.
        name: The model name (``recorded/<name>``), which is also the teacher's default name.
    """

    def __init__(
        self,
        records: Mapping[Any, str | Mapping[str, Any]],
        *,
        key_fields: Sequence[str] = ("source",),
        output_field: str | None = None,
        name: str = "recorded",
    ) -> None:
        if isinstance(key_fields, str):
            key_fields = (key_fields,)
        if not key_fields:
            raise ValueError("RecordedEngine needs at least one key field, e.g. key_fields=('source',).")
        self.key_fields = tuple(key_fields)
        self.output_field = output_field
        self.name = name
        self.records: dict[tuple[str, ...], str | Mapping[str, Any]] = {}
        for key, output in records.items():
            values = key if isinstance(key, tuple) else (key,)
            if len(values) != len(self.key_fields):
                raise ValueError(f"Record key {key!r} has {len(values)} values for key fields {self.key_fields}.")
            self.records[_key(values)] = output

    def lm(self, **settings: Any) -> dspy.LM:
        """A ``dspy.LM`` on this engine (DSPy's cache off: a lookup is cheaper than a cache entry)."""
        settings.setdefault("cache", False)
        settings.setdefault("num_retries", 0)
        return dspy.LM(f"recorded/{self.name}", engine=self, async_engine=_AsyncRecordedEngine(self), **settings)

    # -- the engine contract ---------------------------------------------------------------------

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message
        from dspy.lm15 import Response
        from dspy.lm15 import TextPart
        from dspy.lm15 import Usage

        system = request.system if isinstance(request.system, str) else ""
        user = next((m.text or "" for m in reversed(request.messages) if m.role == "user"), "")
        outputs = self._outputs(system, self._lookup(user))
        if "Respond with a JSON object" in user:
            text = json.dumps(outputs, ensure_ascii=False)
        else:
            blocks = [f"[[ ## {name} ## ]]\n{value}" for name, value in outputs.items()]
            text = "\n\n".join([*blocks, "[[ ## completed ## ]]"])
        # A replay costs no tokens: report zeros so cost accounting shows what was really spent.
        usage = Usage(input_tokens=0, output_tokens=0)
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(text)]),
                        finish_reason="stop", usage=usage)

    def close(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> RecordedEngine:
        return self

    # -- internals -------------------------------------------------------------------------------

    def _lookup(self, user: str) -> str | Mapping[str, Any]:
        inputs = {m["name"]: m["value"] for m in _MARKER.finditer(user)}
        absent = [f for f in self.key_fields if f not in inputs]
        if absent:
            raise RecordedOutputMissingError(
                f"{self.name}: the request has no input field(s) {absent} (found {sorted(inputs)}); build "
                "the engine with key_fields naming inputs of the task signature."
            )
        key = _key(inputs[f] for f in self.key_fields)
        if key not in self.records:
            preview = " | ".join(k[:60] for k in key)
            raise RecordedOutputMissingError(f"{self.name}: no recorded output for {preview!r}.")
        return self.records[key]

    def _outputs(self, system: str, recorded: str | Mapping[str, Any]) -> dict[str, Any]:
        block = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
        fields = [m["name"] for m in _FIELD_LINE.finditer(block)]
        if isinstance(recorded, Mapping):
            missing = [f for f in fields if f not in recorded]
            if missing:
                raise RecordedOutputMissingError(f"{self.name}: the recording lacks output field(s) {missing}.")
            values = {f: recorded[f] for f in fields}
        else:
            target = self.output_field or (fields[0] if len(fields) == 1 else None)
            if target is None or target not in fields:
                raise RecordedOutputMissingError(
                    f"{self.name}: a text recording fills one output field, but the task has {fields}; "
                    "pass output_field=... or record a dict per output."
                )
            if len(fields) > 1:
                raise RecordedOutputMissingError(
                    f"{self.name}: the task has output fields {fields} and the recording only {target!r}."
                )
            values = {target: recorded}
        if any(isinstance(v, str) and not v.strip() for v in values.values()):
            raise RecordedOutputMissingError(f"{self.name}: the recorded output is empty.")
        return {f: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for f, v in values.items()}


class _AsyncRecordedEngine:
    """The async counterpart DSPy needs for ``acall``; a lookup never blocks, so it calls straight through."""

    def __init__(self, sync: RecordedEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        await asyncio.sleep(0)
        return self.sync.complete(request)

    async def aclose(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> _AsyncRecordedEngine:
        return self


def recorded_lm(
    examples: Iterable[Mapping[str, Any] | dspy.Example],
    output: str | Callable[[Any], Any],
    *,
    key_fields: Sequence[str] = ("source",),
    output_field: str | None = None,
    name: str = "recorded",
) -> dspy.LM:
    """A recorded LM built from dataset rows.

    Args:
        examples: Rows or examples holding both the key fields and the recorded output.
        output: The column holding the output, or a function ``row -> output`` (``None`` skips the row).
        key_fields: Input fields identifying a request.
        output_field: See :class:`RecordedEngine`.
        name: The engine's name.

    Raises:
        ValueError: No row has an output, or two rows share a key but record different outputs (a
            request could replay only one of them: add a key field that tells the rows apart).
    """
    get = output if callable(output) else (lambda row: row[output])
    records: dict[tuple[Any, ...], Any] = {}
    first_row: dict[tuple[Any, ...], int] = {}
    for number, row in enumerate(examples):
        value = get(row)
        if value is None:
            continue
        key = tuple(row[f] for f in key_fields)
        if key in records and records[key] != value:
            raise ValueError(
                f"recorded_lm({name!r}): rows {first_row[key]} and {number} have the same key_fields "
                f"{tuple(key_fields)} but different outputs, so a request could replay only one of them. Add a "
                "field that tells them apart to key_fields (and to the signature's inputs)."
            )
        records[key] = value
        first_row.setdefault(key, number)
    if not records:
        raise ValueError(f"recorded_lm({name!r}): no row had a recorded output.")
    return RecordedEngine(records, key_fields=key_fields, output_field=output_field, name=name).lm()


def recorded_teachers(
    examples: Sequence[Mapping[str, Any] | dspy.Example],
    systems: Sequence[str],
    *,
    column: str = "system_outputs",
    key_fields: Sequence[str] = ("source",),
    output_field: str | None = None,
) -> list[Teacher]:
    """One recorded teacher per system, replaying ``row[column][system]``.

    This is the shape :func:`~fusion_dspy.programs.translate.load_wmt_general` produces: each example
    carries every system's output, so ``recorded_teachers(examples, ["GPT-4", "Claude-3.5"])`` is a
    real two-model pool. Teachers are deterministic, so each has temperature 0 and one sample.
    """
    teachers = []
    for system in systems:
        lm = recorded_lm(
            examples,
            lambda row, s=system: (row[column] or {}).get(s),
            key_fields=key_fields,
            output_field=output_field,
            name=system,
        )
        teachers.append(Teacher(lm, temperature=0.0, samples=1, name=system))
    return teachers
