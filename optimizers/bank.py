"""The candidate bank: the core candidate store, shared by every trial, with call accounting.

Every trial of a study runs the program with the same ``store`` on each of its Fuse modules, so a
teacher draw (example, teacher, temperature, sample, generate instruction) is generated once and
re-used by every later configuration that plans it. So is a fusor reply: configurations that send
the fusor the same prompt (the guard on and off, another selector) pay for it once. Persisted as
JSON Lines next to the study, it survives Ctrl-C and ``kill -9`` (each entry is fsync'ed), and
distributed workers on one machine or a shared filesystem see each other's draws after
:meth:`CandidateBank.refresh`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from fusion_dspy.store import FUSOR_KEY_PREFIX
from fusion_dspy.store import CandidateStore
from fusion_dspy.store import JsonlStore
from fusion_dspy.store import LayeredStore
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
        size: Draws in the bank, including those loaded from disk or added by other processes
            (-1: the store cannot list its entries).
        fusor_hits: Fusor replies answered from the bank (another configuration had sent the fusor
            the same prompt).
        fusor_stored: New fusor replies added.
        fusor_size: Fusor replies in the bank (-1: unknown).
    """

    hits: int
    misses: int
    generated: int
    size: int
    fusor_hits: int = 0
    fusor_stored: int = 0
    fusor_size: int = 0


class CandidateBank(LayeredStore):
    """A :class:`~fusion_dspy.store.CandidateStore` that counts what it saves.

    Args:
        store: The underlying store; :class:`~fusion_dspy.store.JsonlStore` for a persistent bank.

    Example:
        >>> bank = CandidateBank.open("runs/qa.bank/draws.jsonl")
        >>> fuse.store = bank          # the optimizer does this on every Fuse of every trial
        >>> bank.stats().generated     # teacher calls made so far
    """

    def __init__(self, store: CandidateStore) -> None:
        super().__init__(store)
        self._lock = threading.Lock()
        self._counts: Counter[tuple[bool, str]] = Counter()  # (is a fusor reply, event)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None) -> CandidateBank:
        """A bank persisted at ``path`` (JSON Lines), or in memory for ``None``."""
        return cls(MemoryStore() if path is None else JsonlStore(Path(path)))

    @property
    def path(self) -> Path | None:
        return getattr(self.store, "path", None)

    def get(self, key: str) -> StoredDraw | None:
        draw = self.store.get(key)
        self._count(key, "miss" if draw is None else "hit")
        return draw

    def put(self, key: str, draw: StoredDraw) -> None:
        self.store.put(key, draw)
        self._count(key, "put")

    def _count(self, key: str, event: str, by: int = 1) -> None:
        with self._lock:
            self._counts[key.startswith(FUSOR_KEY_PREFIX), event] += by

    # Single flight (LayeredStore: the inner store's claims): concurrent trials wait for a draw another
    # trial is generating instead of paying for it twice.

    def wait(self, key: str, timeout: float | None = None) -> StoredDraw | None:
        draw = super().wait(key, timeout)
        if draw is not None:  # get() counted it as a miss, but no model was called for it.
            self._count(key, "miss", -1)
            self._count(key, "hit")
        return draw

    def refresh(self) -> None:
        """Load entries other processes appended since the last refresh (no-op in memory)."""
        reload = getattr(self.store, "reload", None)
        if reload is not None:
            reload()

    def stats(self) -> BankStats:
        keys = getattr(self.store, "keys", None)
        listed = list(keys()) if callable(keys) else None
        replies = -1 if listed is None else sum(key.startswith(FUSOR_KEY_PREFIX) for key in listed)
        with self._lock:
            counts = dict(self._counts)
        return BankStats(
            hits=counts.get((False, "hit"), 0), misses=counts.get((False, "miss"), 0),
            generated=counts.get((False, "put"), 0), size=-1 if listed is None else len(listed) - replies,
            fusor_hits=counts.get((True, "hit"), 0), fusor_stored=counts.get((True, "put"), 0), fusor_size=replies,
        )

    def __len__(self) -> int:
        return self.stats().size

    def __deepcopy__(self, memo: dict[int, Any]) -> CandidateBank:
        return self  # Shared by design: every copy of the program draws from one bank.

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store}  # A pickled program (save_program=True) keeps the bank, not the lock.

    def __setstate__(self, state: dict[str, Any]) -> None:
        CandidateBank.__init__(self, state["store"])
