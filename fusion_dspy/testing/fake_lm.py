"""A deterministic, offline LM engine that answers any DSPy signature.

It implements DSPy 3.4's custom engine contract, so it goes through the real ``dspy.LM`` path
(cache, history, usage, adapters, retries). It reads the output field names and types from the
adapter's prompt and answers each field with a value of the right type. It can be told to fail,
sleep, return garbage, or answer with a user-supplied function, and it counts every call and the
calls in flight at once (:class:`InFlightGauge`, which several engines may share).

Example:
    >>> engine = FakeEngine(responder=lambda req: {"answer": req.inputs["question"].upper()})
    >>> lm = engine.lm()
    >>> with dspy.context(lm=lm):
    ...     dspy.Predict("question -> answer")(question="hi").answer
    'HI'
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from fusion_dspy.hashing import stable_hash

__all__ = ["FakeEngine", "FakeRequest", "FakeLMError", "InFlightGauge"]

_FIELD_LINE = re.compile(r"^\d+\. `(?P<name>[^`]+)` \((?P<type>.*?)\):", re.MULTILINE)
_SCHEMA_NOTE = re.compile(
    r"\[\[ ## (?P<name>[^#\]]+?) ## \]\]\n\{[^}\n]*\}\s+# note: the value you produce must adhere to the JSON schema: "
    r"(?P<schema>\{.*\})$",
    re.MULTILINE,
)
_MARKER = re.compile(r"\[\[ ## (?P<name>[^#\]]+?) ## \]\]\n(?P<value>.*?)(?=\n\n\[\[ ## |\Z)", re.DOTALL)


class FakeLMError(RuntimeError):
    """Raised by a :class:`FakeEngine` told to fail."""


@dataclasses.dataclass(frozen=True)
class FakeRequest:
    """What the fake engine understood of one request.

    Attributes:
        model: The ``dspy.LM`` model string.
        system: The system prompt text.
        user: The last user message text.
        inputs: Input field values parsed from the last user message (``[[ ## name ## ]]`` blocks).
        outputs: Output field names mapped to their type as the adapter printed it (``"int"``, ``"str"``...).
        schemas: JSON schemas the adapter gave for structured output fields (pydantic models, lists).
        json_mode: Whether the adapter asked for a JSON object (JSONAdapter).
        temperature: Sampling temperature of the request (``None`` when unset).
        seed: Seed of the request (``None`` when unset).
        max_tokens: Generation budget of the request (``None`` when unset).
        call: Zero-based index of this call on the engine.
    """

    model: str
    system: str
    user: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    schemas: Mapping[str, Any]
    json_mode: bool
    temperature: float | None
    seed: int | None
    max_tokens: int | None
    call: int

    def sample(self, teacher: str, *, seed: int = 0, limit: int = 256) -> int:
        """Which of teacher ``teacher``'s draws this request is (0 for its first), under a Fuse's base ``seed``.

        DSPy keeps the draw's ``rollout_id`` from the engine; the engine sees only the seed
        :func:`fusion_dspy.teacher.draw_seed` derived from (``seed``, ``teacher``, sample), and this
        inverts it, for fakes that answer a teacher's k-th draw in a set way.

        Raises:
            LookupError: if the request's seed is not one of ``teacher``'s first ``limit`` draws.
        """
        from fusion_dspy.teacher import draw_seed

        for sample in range(limit):
            if draw_seed(seed, teacher, sample) == self.seed:
                return sample
        raise LookupError(f"seed {self.seed!r} is none of teacher {teacher!r}'s first {limit} draws under "
                          f"base seed {seed}; check the teacher's name and the Fuse's seed.")

    def digest(self, *extra: object) -> str:
        """A stable hex digest of the inputs, seed and temperature (and ``extra``), for varied answers."""
        return stable_hash([sorted(self.inputs.items()), self.seed, self.temperature, *map(str, extra)])


Responder = Callable[[FakeRequest], "Mapping[str, Any] | str"]


def _from_schema(schema: Mapping[str, Any], label: str, number: int) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][number % len(schema["enum"])]
    if kind == "object":
        return {key: _from_schema(sub, key, number) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_from_schema(schema.get("items", {"type": "string"}), label, number + i) for i in range(2)]
    if kind == "integer":
        return number % 100
    if kind == "number":
        return round((number % 1000) / 10, 1)
    if kind == "boolean":
        return bool(number % 2)
    return f"{label}-{number % 10_000}"


def default_value(request: FakeRequest, name: str, type_name: str) -> Any:
    """A deterministic value of the right type for one output field."""
    digest = request.digest(name)
    number = int(digest[:8], 16)
    if name in request.schemas:
        return _from_schema(request.schemas[name], name, number)
    if type_name == "int":
        return number % 100
    if type_name == "float":
        return round((number % 1000) / 10, 1)
    if type_name == "bool":
        return bool(number % 2)
    if type_name.startswith("Literal["):
        options = re.findall(r"'([^']*)'", type_name)
        return options[number % len(options)] if options else ""
    if type_name.startswith("list["):
        return [f"{name}-{digest[:4]}", f"{name}-{digest[4:8]}"]
    first_input = next(iter(request.inputs.values()), "")
    return f"{name} about {first_input[:40]} ({digest[:6]})"


class InFlightGauge:
    """Counts the calls in flight together, exactly: ``with gauge:`` around each call.

    Concurrency tests assert ``gauge.peak`` (the most calls that were ever in flight at once) and
    ``gauge.current`` (calls still running) rather than wall-clock bounds, which a loaded machine
    breaks. Share one gauge between engines to count across a whole teacher pool.

    Example:
        >>> gauge = InFlightGauge()
        >>> with gauge:
        ...     gauge.current
        1
        >>> gauge.peak, gauge.current, gauge.entered
        (1, 0, 1)
    """

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.entered = 0
        self._lock = threading.Lock()

    def __enter__(self) -> InFlightGauge:
        with self._lock:
            self.current += 1
            self.entered += 1
            self.peak = max(self.peak, self.current)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        with self._lock:
            self.current -= 1

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {"current": self.current, "peak": self.peak, "entered": self.entered}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class FakeEngine:
    """An offline engine for tests and benchmarks.

    Args:
        responder: Called per request; returns a mapping of output field values (missing fields get
            a deterministic default) or a raw string sent back verbatim. ``None`` uses defaults only.
        delay: Seconds to sleep per call (``time.sleep`` in the sync path, ``asyncio.sleep`` in async).
        fail: ``True`` to fail every call, or a predicate on the request; failing calls raise
            :class:`FakeLMError` (not retried by DSPy).
        garbage: ``True`` (or a predicate) to reply with text no adapter can parse.
        name: Model name used by :meth:`lm` (``"local/<name>"``).
        gauge: Where calls in flight are counted; pass one :class:`InFlightGauge` to several engines
            to count across them. Each engine gets its own by default.
    """

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        delay: float = 0.0,
        fail: bool | Callable[[FakeRequest], bool] = False,
        garbage: bool | Callable[[FakeRequest], bool] = False,
        name: str = "fake",
        gauge: InFlightGauge | None = None,
    ) -> None:
        self.responder = responder
        self.delay = delay
        self.fail = fail
        self.garbage = garbage
        self.name = name
        self.gauge = gauge if gauge is not None else InFlightGauge()
        self.requests: list[FakeRequest] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """Number of requests that reached the engine (cache hits never do)."""
        return len(self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def lm(self, **settings: Any) -> Any:
        """A ``dspy.LM`` backed by this engine. ``cache`` defaults to ``False`` (tests count calls)."""
        import dspy

        settings.setdefault("cache", False)
        return dspy.LM(f"local/{self.name}", engine=self, async_engine=AsyncFakeEngine(self), **settings)

    # -- engine contract -------------------------------------------------------------------------

    def complete(self, request: Any) -> Any:
        with self.gauge:
            parsed = self._parse(request)
            if self.delay:
                time.sleep(self.delay)
            return self._respond(request, parsed)

    def close(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> FakeEngine:
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for ``program.save(..., save_program=True)``: everything but the lock.
        with self._lock:
            state = dict(self.__dict__)
            state["requests"] = list(self.requests)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- internals -------------------------------------------------------------------------------

    def _parse(self, request: Any) -> FakeRequest:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(p, "text", "") for p in (request.system or ())
        )
        user = next((m.text or "" for m in reversed(request.messages) if m.role == "user"), "")
        outputs_block = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
        outputs = {m["name"]: m["type"] for m in _FIELD_LINE.finditer(outputs_block)}
        schemas = {}
        for match in _SCHEMA_NOTE.finditer(system.replace('\\"', '"')):
            if match["name"] in outputs:
                try:
                    schemas[match["name"]] = json.loads(match["schema"])
                except json.JSONDecodeError:
                    pass  # Not a schema we can read; the field falls back to a typed default.
        # The adapter appends its own reminder after the last input block; it is not part of the value.
        input_text = re.split(r"\n\n(?:Respond with|Think step by step)", user, maxsplit=1)[0]
        inputs = {m["name"]: m["value"].strip() for m in _MARKER.finditer(input_text)}
        config = request.config
        with self._lock:
            parsed = FakeRequest(
                model=request.model,
                system=system,
                user=user,
                inputs=inputs,
                outputs=outputs,
                schemas=schemas,
                json_mode="Respond with a JSON object" in user,
                temperature=getattr(config, "temperature", None),
                seed=getattr(config, "seed", None),
                max_tokens=getattr(config, "max_tokens", None),
                call=len(self.requests),
            )
            self.requests.append(parsed)
        return parsed

    def _respond(self, request: Any, parsed: FakeRequest) -> Any:
        from dspy.lm15 import Message
        from dspy.lm15 import Response
        from dspy.lm15 import TextPart
        from dspy.lm15 import Usage

        if self.fail is True or (callable(self.fail) and self.fail(parsed)):
            raise FakeLMError(f"{self.name}: told to fail (call {parsed.call})")
        if self.garbage is True or (callable(self.garbage) and self.garbage(parsed)):
            text = "~~ no fields here, just noise ~~"
        else:
            text = self._answer(parsed)
        prompt_chars = len(parsed.system) + sum(len(m.text or "") for m in request.messages)
        usage = Usage(input_tokens=max(1, prompt_chars // 4), output_tokens=max(1, len(text) // 4))
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=usage,
        )

    def _answer(self, parsed: FakeRequest) -> str:
        given = self.responder(parsed) if self.responder is not None else {}
        if isinstance(given, str):
            return given
        values = {
            name: given[name] if name in given else default_value(parsed, name, type_name)
            for name, type_name in parsed.outputs.items()
        }
        if parsed.json_mode:
            return json.dumps(values, default=_jsonable)
        blocks = [f"[[ ## {name} ## ]]\n{_chat_value(value)}" for name, value in values.items()]
        return "\n\n".join([*blocks, "[[ ## completed ## ]]"])


class AsyncFakeEngine:
    """The async counterpart DSPy needs for ``acall``; shares state with its sync engine."""

    def __init__(self, sync: FakeEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        with self.sync.gauge:
            parsed = self.sync._parse(request)
            if self.sync.delay:
                await asyncio.sleep(self.sync.delay)
            return self.sync._respond(request, parsed)

    async def aclose(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncFakeEngine:
        return self


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def _chat_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=_jsonable)
