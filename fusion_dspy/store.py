"""Candidate stores: remember teacher generations so they are paid for once.

A Fuse with a ``store`` looks every planned draw up before calling its teacher. The key covers
everything that determines a draw (task signature and generate instruction/demos, inputs, teacher
name, sample index, temperature, seed), so configurations that differ only in N, the pool subset,
the fusor, its prompt or the mode re-use the same candidates. This is what makes an optimizer
study or a method comparison at equal N cheap, and a killed run resumable.

Stored entries keep the *real* usage and latency of the original call, so cost accounting does
not drop to zero on a hit (DSPy's own cache reports no usage for hits).

Draws whose answer could not be parsed (``AdapterParseError``) are stored too, as failures: the
model did answer, and asking again with the same seed would pay for the same malformed answer. A
re-run then sees exactly the candidates of the first run, failures included, which keeps method
comparisons paired. Transient faults (timeouts, connection or rate-limit errors) are never stored:
the next call tries that teacher again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Protocol
from typing import runtime_checkable

from fusion_dspy.report import TokenUsage
from fusion_dspy.text_safety import json_line

__all__ = ["CandidateStore", "ClaimingStore", "JsonlStore", "MemoryStore", "StoredDraw", "draw_key"]


@dataclasses.dataclass(frozen=True)
class StoredDraw:
    """A draw as stored: JSON-mode output values (or the parse failure), and the usage and latency
    of the original call."""

    outputs: dict[str, Any] | None
    usage: dict[str, TokenUsage]
    latency_s: float = 0.0
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


class CandidateStore(Protocol):
    """Where a Fuse keeps candidates. Implementations must be thread-safe."""

    def get(self, key: str) -> StoredDraw | None: ...

    def put(self, key: str, draw: StoredDraw) -> None: ...


@runtime_checkable
class ClaimingStore(CandidateStore, Protocol):
    """A store that also stops concurrent calls from generating the same draw twice ("single flight").

    When two calls miss the same key at once (an optimizer running trials in threads, a program
    evaluated in threads), the first ``claim`` wins and generates; the others ``wait`` for its
    result instead of paying for the same draw again. A Fuse waits only after releasing its own
    claims, so two calls can never wait on each other. Claims are per process.
    """

    def claim(self, key: str) -> bool:
        """``True``: the caller now generates ``key`` and must ``release`` it (after ``put``, or
        after a failure). ``False``: another call is generating it: ``wait`` for it."""
        ...

    def release(self, key: str) -> None: ...

    def wait(self, key: str, timeout: float | None = None) -> StoredDraw | None:
        """The draw once its generator is done (``None`` if it failed, was not stored, or on timeout)."""
        ...


def draw_key(
    *,
    signature: str,
    instructions: str,
    demos: Any,
    inputs: Mapping[str, Any],
    teacher: str,
    sample: int,
    temperature: float,
    seed: int,
) -> str:
    """A stable key for one draw (sha256 of its canonical JSON)."""
    payload = json.dumps(
        {
            "signature": signature,
            "instructions": instructions,
            "demos": demos,
            "inputs": inputs,
            "teacher": teacher,
            "sample": sample,
            "temperature": temperature,
            "seed": seed,
        },
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()  # any str hashes, lone surrogates too


class MemoryStore:
    """An in-process store (a dict behind a lock) with single-flight claims (:class:`ClaimingStore`)."""

    def __init__(self) -> None:
        self._entries: dict[str, StoredDraw] = {}
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Event] = {}

    def get(self, key: str) -> StoredDraw | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, draw: StoredDraw) -> None:
        with self._lock:
            self._entries[key] = draw

    def claim(self, key: str) -> bool:
        with self._lock:
            if key in self._in_flight or key in self._entries:
                return False
            self._in_flight[key] = threading.Event()
            return True

    def release(self, key: str) -> None:
        with self._lock:
            done = self._in_flight.pop(key, None)
        if done is not None:
            done.set()

    def wait(self, key: str, timeout: float | None = None) -> StoredDraw | None:
        with self._lock:
            done = self._in_flight.get(key)
        if done is not None:
            done.wait(timeout)
        return self.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __deepcopy__(self, memo: dict[int, Any]) -> MemoryStore:
        return self  # A store is shared state by design: copies of a program share candidates.


class JsonlStore(MemoryStore):
    """A store persisted as an append-only JSON Lines file.

    Every ``put`` appends one line and flushes it to disk (``fsync``), so a killed process loses at
    most the draw being written; a torn last line is skipped on load. Several processes may append
    to one file (each line is written with a single ``write`` call in append mode), and each
    process sees the others' entries after :meth:`reload`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.skipped_lines = 0
        self._torn_tail = False
        self.reload()

    def reload(self) -> None:
        """Read every complete line of the file into memory."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            # A killed writer can leave a last line without its newline; the next append must start
            # on a fresh line, or it would be glued to the torn one and lost on the next load.
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                self._torn_tail = handle.read(1) != b"\n"
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    draw = StoredDraw(
                        outputs=record["outputs"],
                        usage={name: TokenUsage(**u) for name, u in record["usage"].items()},
                        latency_s=float(record.get("latency_s", 0.0)),
                        error=record.get("error"),
                        error_type=record.get("error_type"),
                    )
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    self.skipped_lines += 1  # A torn write from a killed process: ignore it.
                    continue
                with self._lock:
                    self._entries[record["key"]] = draw

    def put(self, key: str, draw: StoredDraw) -> None:
        line = json_line(
            {
                "key": key,
                "outputs": draw.outputs,
                "usage": {name: u.model_dump() for name, u in draw.usage.items()},
                "latency_s": draw.latency_s,
                **({} if draw.ok else {"error": draw.error, "error_type": draw.error_type}),
            },
            default=str,
        )
        with self._lock:
            with self.path.open("a", encoding="utf-8") as handle:
                if self._torn_tail:
                    line = "\n" + line
                    self._torn_tail = False
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._entries[key] = draw
