"""Candidate stores: remember teacher generations (and fusor replies) so they are paid for once.

A Fuse with a ``store`` looks every planned draw up before calling its teacher. The key covers
everything that determines a draw (the generate predictor's signature, as
:func:`~fusion_dspy.hashing.signature_fingerprint` states it: instructions and every field's name,
type, description and prefix; its demos; the inputs, teacher name, sample index, temperature and
seed), so configurations that differ only in N, the pool subset, the fusor, its prompt or the mode
re-use the same candidates. This is what makes an optimizer
study or a method comparison at equal N cheap, and a killed run resumable. The teacher's name is
its identity: the LM's own settings (``max_tokens``, a client-side ``timeout``...) are not part of
the key, so a pool rebuilt from its config keeps its bank; a teacher whose settings change what it
answers needs a new name.

The fusor's replies are stored too, keyed by everything its prompt is made of (fusor signature,
demos, the rendered candidates and task inputs, the fusor LM and its settings), so
configurations that send the fusor the same prompt (the guard on or off, another selector) share
one paid call, as DSPy's own cache would share it, but with the cost kept.

Stored entries keep the *real* usage and latency of the original call, so cost accounting does
not drop to zero on a hit (DSPy's own cache reports no usage for hits). An entry whose outputs no
longer validate against the signature (written by an older program, or by hand) is a miss: it is
generated again, with a warning, and the new reply replaces it.

Draws whose answer could not be parsed (``AdapterParseError``) are stored too, as failures: the
model did answer, and asking again with the same seed would pay for the same malformed answer. A
re-run then sees exactly the candidates of the first run, failures included, which keeps method
comparisons paired. Transient faults (timeouts, connection or rate-limit errors) are never stored:
the next call tries that teacher again.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol
from typing import runtime_checkable

from fusion_dspy.hashing import signature_fingerprint
from fusion_dspy.hashing import stable_hash
from fusion_dspy.journal import Journal
from fusion_dspy.report import TokenUsage

if TYPE_CHECKING:
    import dspy

__all__ = [
    "FUSOR_KEY_PREFIX",
    "CandidateStore",
    "ClaimingStore",
    "JsonlStore",
    "LayeredStore",
    "MemoryStore",
    "StoredDraw",
    "draw_key",
    "fusor_key",
]


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
    signature: type[dspy.Signature],
    demos: Any,
    inputs: Mapping[str, Any],
    teacher: str,
    sample: int,
    temperature: float,
    seed: int,
) -> str:
    """A stable key for one draw (:func:`fusion_dspy.hashing.stable_hash` of its fields).

    ``signature`` is the generate predictor's: its instructions, field types and descriptions are
    part of the key (:func:`~fusion_dspy.hashing.signature_fingerprint`).
    """
    return stable_hash(
        {
            "signature": signature_fingerprint(signature),
            "demos": demos,
            "inputs": inputs,
            "teacher": teacher,
            "sample": sample,
            "temperature": temperature,
            "seed": seed,
        }
    )


#: How a fusor reply's key begins (:func:`fusor_key`).
FUSOR_KEY_PREFIX = "fusor:"


def fusor_key(
    *,
    signature: type[dspy.Signature],
    demos: Any,
    inputs: Mapping[str, Any],
    fusor: str,
    lm_settings: Mapping[str, Any],
) -> str:
    """A stable key for one fusor reply: the prompt's parts and the LM that answers it.

    ``signature`` is the fusor's as sent (:func:`~fusion_dspy.hashing.signature_fingerprint`);
    ``inputs`` are the fusor's rendered inputs (the candidates in the order shown, the task inputs);
    ``lm_settings`` the fusor LM's model and scalar settings (temperature, max_tokens...). The key
    starts with :data:`FUSOR_KEY_PREFIX`, so a store's entries can be told apart (draw keys are hex).
    """
    return FUSOR_KEY_PREFIX + stable_hash(
        {
            "role": "fusor",
            "signature": signature_fingerprint(signature),
            "demos": demos,
            "inputs": inputs,
            "fusor": fusor,
            "lm": lm_settings,
        }
    )


class LayeredStore:
    """A store that adds behaviour to another: it forwards ``get``/``put`` and, when the inner store has
    them, the single-flight claims (without: every caller generates, and ``wait`` is a plain ``get``).

    Subclass it and override what the layer changes (counting, replaying something else); the claims
    stay the inner store's, so calls through the layer and calls straight to the store never pay twice.
    """

    def __init__(self, store: CandidateStore) -> None:
        self.store = store

    def get(self, key: str) -> StoredDraw | None:
        return self.store.get(key)

    def put(self, key: str, draw: StoredDraw) -> None:
        self.store.put(key, draw)

    def claim(self, key: str) -> bool:
        return self.store.claim(key) if isinstance(self.store, ClaimingStore) else True

    def release(self, key: str) -> None:
        if isinstance(self.store, ClaimingStore):
            self.store.release(key)

    def wait(self, key: str, timeout: float | None = None) -> StoredDraw | None:
        return self.store.wait(key, timeout) if isinstance(self.store, ClaimingStore) else self.store.get(key)


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
        _check_entry(key, draw)
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

    def keys(self) -> list[str]:
        """The keys of every entry (a snapshot)."""
        with self._lock:
            return list(self._entries)

    def __deepcopy__(self, memo: dict[int, Any]) -> MemoryStore:
        return self  # A store is shared state by design: copies of a program share candidates.

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (``program.save(..., save_program=True)``): the entries travel, the lock and the
        # claims of this process's in-flight calls do not.
        with self._lock:
            return {"entries": dict(self._entries)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        MemoryStore.__init__(self)
        self._entries.update(state["entries"])


class JsonlStore(MemoryStore):
    """A store persisted as an append-only JSON Lines file (a :class:`~fusion_dspy.journal.Journal`).

    Every ``put`` appends one line and flushes it to disk (``fsync``), so a killed process loses at
    most the draw being written. A torn last line is cut off and unreadable lines are skipped, all
    counted in :attr:`skipped_lines` (the journal's one torn-tail policy). Several processes may append to one
    file, and each process sees the others' entries after :meth:`reload`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"JsonlStore: path must be a file path (str or pathlib.Path), got {type(path).__name__}; "
                            "e.g. JsonlStore('runs/bank.jsonl').")
        if not os.fspath(path):
            raise ValueError("JsonlStore: path is empty; give the .jsonl file to keep the draws in, "
                             "e.g. JsonlStore('runs/bank.jsonl').")
        if os.path.isdir(path):
            raise ValueError(f"JsonlStore: path {os.fspath(path)!r} is a directory; give the .jsonl file in it, "
                             f"e.g. JsonlStore({os.path.join(os.fspath(path), 'bank.jsonl')!r}).")
        super().__init__()
        self.journal = Journal(path)
        self.path = self.journal.path
        self._skipped = 0
        self.reload()

    def reload(self) -> None:
        """Read the entries appended since the last reload (by any process) into memory."""
        entries = {}
        malformed = 0
        for record in self.journal.read_new():
            try:
                entries[record["key"]] = _draw_from_record(record)
            except (KeyError, TypeError, ValueError):
                malformed += 1  # A line that is JSON but no draw: skip it like a torn one.
        self._skipped += self.journal.skipped + malformed
        with self._lock:
            self._entries.update(entries)

    @property
    def skipped_lines(self) -> int:
        """Lines not loaded: torn tails cut off, unreadable lines, JSON lines that are no draw."""
        return self.journal.torn + self._skipped

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}  # The file is the store: a pickled program re-opens it.

    def __setstate__(self, state: dict[str, Any]) -> None:
        JsonlStore.__init__(self, state["path"])

    def put(self, key: str, draw: StoredDraw) -> None:
        _check_entry(key, draw)
        record = {
            "key": key,
            "outputs": draw.outputs,
            "usage": {name: u.model_dump() for name, u in draw.usage.items()},
            "latency_s": draw.latency_s,
            **({} if draw.ok else {"error": draw.error, "error_type": draw.error_type}),
        }
        self.journal.append(record)  # Durable first (the journal serialises writers); then visible.
        with self._lock:
            self._entries[key] = draw


def _check_entry(key: Any, draw: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"put(key, draw): key must be a str (draw_key(...) or fusor_key(...)), "
                        f"got {type(key).__name__}.")
    if not isinstance(draw, StoredDraw):
        raise TypeError(f"put(key, draw): draw must be a StoredDraw(outputs=..., usage=...), "
                        f"got {type(draw).__name__}.")


def _draw_from_record(record: Mapping[str, Any]) -> StoredDraw:
    """The draw of one journal line; ``TypeError``/``ValueError``/``KeyError`` for a line of another shape."""
    outputs, usage = record["outputs"], record["usage"]
    if not isinstance(record["key"], str):
        raise TypeError(f"the key must be a string, got {type(record['key']).__name__}")
    if outputs is not None and not isinstance(outputs, Mapping):
        raise TypeError(f"outputs must be an object or null, got {type(outputs).__name__}")
    if not isinstance(usage, Mapping) or not all(isinstance(u, Mapping) for u in usage.values()):
        raise TypeError("usage must be an object of {lm: {input_tokens, output_tokens, calls}}")
    return StoredDraw(
        outputs=None if outputs is None else dict(outputs),
        usage={name: TokenUsage(**u) for name, u in usage.items()},
        latency_s=float(record.get("latency_s", 0.0)),
        error=record.get("error"),
        error_type=record.get("error_type"),
    )
