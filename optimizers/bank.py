"""The candidate bank: the core candidate store, shared by every trial, with call accounting.

Every trial of a study runs the program with the same ``store`` on each of its Fuse modules, so a
teacher draw (example, teacher, temperature, sample, generate instruction) is generated once and
re-used by every later configuration that plans it; only the fusor calls are new. Persisted as
JSON Lines next to the study, it survives Ctrl-C and ``kill -9`` (each entry is fsync'ed), and
distributed workers on one machine or a shared filesystem see each other's draws after
:meth:`CandidateBank.refresh`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

from fusion_dspy.store import CandidateStore
from fusion_dspy.store import ClaimingStore
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import MemoryStore
from fusion_dspy.store import StoredDraw

__all__ = ["BankStats", "CandidateBank"]


@dataclasses.dataclass(frozen=True)
class BankStats:
    """Counters of one bank since it was opened.

    Attributes:
        hits: Draws answered from the bank (no LM call).
        misses: Draws the bank did not have (each one became a teacher call).
        generated: New draws added (misses that succeeded).
        size: Entries in the bank, including those loaded from disk or added by other processes.
    """

    hits: int
    misses: int
    generated: int
    size: int


class CandidateBank:
    """A :class:`~fusion_dspy.store.CandidateStore` that counts what it saves.

    Args:
        store: The underlying store; :class:`~fusion_dspy.store.JsonlStore` for a persistent bank.

    Example:
        >>> bank = CandidateBank.open("runs/qa.bank/draws.jsonl")
        >>> fuse.store = bank          # the optimizer does this on every Fuse of every trial
        >>> bank.stats().generated     # teacher calls made so far
    """

    def __init__(self, store: CandidateStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._generated = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None) -> CandidateBank:
        """A bank persisted at ``path`` (JSON Lines), or in memory for ``None``."""
        return cls(MemoryStore() if path is None else JsonlStore(Path(path)))

    @property
    def path(self) -> Path | None:
        return getattr(self.store, "path", None)

    def get(self, key: str) -> StoredDraw | None:
        draw = self.store.get(key)
        with self._lock:
            if draw is None:
                self._misses += 1
            else:
                self._hits += 1
        return draw

    def put(self, key: str, draw: StoredDraw) -> None:
        self.store.put(key, draw)
        with self._lock:
            self._generated += 1

    # Single flight (see fusion_dspy.store.ClaimingStore): concurrent trials wait for a draw another
    # trial is generating instead of paying for it twice.

    def claim(self, key: str) -> bool:
        return self.store.claim(key) if isinstance(self.store, ClaimingStore) else True

    def release(self, key: str) -> None:
        if isinstance(self.store, ClaimingStore):
            self.store.release(key)

    def wait(self, key: str, timeout: float | None = None) -> StoredDraw | None:
        draw = self.store.wait(key, timeout) if isinstance(self.store, ClaimingStore) else self.store.get(key)
        if draw is not None:
            with self._lock:  # get() counted it as a miss, but no teacher was called for it.
                self._misses -= 1
                self._hits += 1
        return draw

    def refresh(self) -> None:
        """Load entries other processes appended since the last refresh (no-op in memory)."""
        reload = getattr(self.store, "reload", None)
        if reload is not None:
            reload()

    def stats(self) -> BankStats:
        with self._lock:
            return BankStats(hits=self._hits, misses=self._misses, generated=self._generated,
                             size=len(self.store) if hasattr(self.store, "__len__") else -1)

    def __len__(self) -> int:
        return self.stats().size

    def __deepcopy__(self, memo: dict[int, Any]) -> CandidateBank:
        return self  # Shared by design: every copy of the program draws from one bank.

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store}  # A pickled program (save_program=True) keeps the bank, not the lock.

    def __setstate__(self, state: dict[str, Any]) -> None:
        CandidateBank.__init__(self, state["store"])
