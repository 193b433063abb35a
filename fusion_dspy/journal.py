"""An append-only JSON Lines journal: the one durable log format of the library.

Candidate stores (:class:`~fusion_dspy.store.JsonlStore`), the optimizer's evaluation memo, the
evaluation harness's results and synth shards all persist through :class:`Journal`, so they share
one write discipline and one torn-tail policy:

* **Writes.** Each entry is one line, written to a file opened in append mode and ``fsync``ed
  before :meth:`Journal.append` returns. A killed process loses at most the entries being written
  (none of which was acknowledged). Several processes may append to one file: each write holds an
  exclusive ``flock`` on it (POSIX), so entries never interleave.
* **Group commit.** Threads of one process that append while another thread of it is writing do
  not queue for one ``fsync`` each: the next writer takes every entry waiting, writes them with one
  ``write`` and one ``fsync``, and each of their ``append`` calls returns once that ``fsync`` is
  done (or raises its error). The guarantee per entry is unchanged; K prompts storing their draws
  at once pay about one disk flush, not K in a row.
* **Torn tail.** A kill mid-write can leave a last line without its newline. It is cut off (the
  file truncated after its last newline) when the journal is opened and before every append,
  under the same lock, so the fragment is certainly a dead writer's and the next entry is never
  glued onto it. The cut is logged and counted in :attr:`Journal.repaired_bytes` /
  :attr:`Journal.torn`. Readers skip a last line that is not yet complete.
* **Read-only access.** :func:`read_entries` reads a journal without opening it for writing (no
  repair, no lock): for scripts that report on a run another process may still be writing, or
  one that was killed mid-write.
* **Unreadable lines** (complete lines that are not a JSON object) are skipped, logged and counted
  in :attr:`Journal.skipped`; blank lines are ignored.
* **Text.** Entries are written as UTF-8 with non-ASCII text kept readable; an entry holding text
  UTF-8 cannot encode (a lone surrogate) is written with JSON escapes instead, so an append never
  fails on text and reads back equal.

Without ``fcntl`` (Windows) there is no lock: one writing process per file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Generator
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fusion_dspy.text_safety import json_line

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal", "read_entries"]

_logger = logging.getLogger(__name__)


class Journal:
    """Append JSON objects to a file durably; read back every complete entry.

    Args:
        path: The ``.jsonl`` file (created, with its parent directories, on the first append).
        fsync: Flush every entry to disk before ``append`` returns (``False`` for scratch files).

    Attributes:
        repaired_bytes: Bytes of torn tails cut off by this object (at open or before an append).
        torn: How many torn tails were cut off.
        skipped: Unreadable complete lines met by the last complete read.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.repaired_bytes = 0
        self.torn = 0
        self.skipped = 0
        self._offset = 0  # Bytes of complete lines consumed by read_new().
        self._lock = threading.Lock()  # One writer at a time (within the process; flock across processes).
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []  # Entries waiting for the next writer (group commit).
        if self.path.exists():
            with self._lock, self._open(os.O_RDWR) as fd:
                self._cut_torn_tail(fd)

    # -- writing -----------------------------------------------------------------------------------

    def append(self, entry: Mapping[str, Any]) -> None:
        """Write one entry (a JSON object) as one line, durably (returns once it is on disk)."""
        mine = _Pending(_encode(entry))
        with self._queue_lock:
            self._queue.append(mine)
        with self._lock:
            if not mine.done:  # else a writer before us took it along
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                try:
                    self._write(b"".join(item.data for item in batch))
                except BaseException as error:
                    for item in batch:
                        item.error = error
                    raise
                finally:
                    for item in batch:
                        item.done = True
        if mine.error is not None:
            raise OSError(f"{self.path}: writing the entry failed: {mine.error}") from mine.error

    def _write(self, data: bytes) -> None:
        with self._open(os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd:
            self._cut_torn_tail(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)

    @contextlib.contextmanager
    def _open(self, flags: int) -> Iterator[int]:
        fd = os.open(self.path, flags, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # Released by close.
            yield fd
        finally:
            os.close(fd)

    def _cut_torn_tail(self, fd: int) -> None:
        """Truncate after the last newline. Holding the lock, a fragment there is a dead writer's."""
        size = os.fstat(fd).st_size
        if size == 0 or _pread(fd, 1, size - 1) == b"\n":
            return
        keep, position = 0, size
        while position > 0:
            start = max(0, position - _CHUNK)
            newline = _pread(fd, position - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        os.ftruncate(fd, keep)
        if self.fsync:
            os.fsync(fd)
        self.repaired_bytes += size - keep
        self.torn += 1
        _logger.warning("%s: cut off a torn last entry (%d bytes) left by a killed writer", self.path, size - keep)

    # -- reading -----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every readable entry in file order; sets :attr:`skipped` once the iteration completes."""
        self.skipped = yield from _entries(self.path)

    def read(self) -> list[dict[str, Any]]:
        """Every readable entry, as a list."""
        return list(self)

    def read_new(self) -> list[dict[str, Any]]:
        """The entries completed since the previous ``read_new`` (every entry the first time).

        For readers that follow a file other processes append to (a shared candidate bank): each
        call reads only the new bytes. Sets :attr:`skipped` to the unreadable lines among them.
        """
        entries: list[dict[str, Any]] = []
        skipped = 0
        if not self.path.exists():
            return entries
        with self.path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < self._offset:  # The file was replaced or cut below what we read: start over.
                self._offset = 0
            handle.seek(self._offset)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # Still being written (or torn): read it once it is complete.
                self._offset += len(raw)
                if not raw.strip():
                    continue
                entry = _decode(raw)
                if entry is None:
                    skipped += 1
                    _logger.warning("%s: skipping an unreadable entry (%d bytes)", self.path, len(raw))
                    continue
                entries.append(entry)
        self.skipped = skipped
        return entries


_CHUNK = 4096


def read_entries(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every readable entry of the journal at ``path``, in file order, without writing to the file.

    Unlike constructing a :class:`Journal`, this never cuts a torn tail: a last line without its
    newline (a writer still at work, or killed) is skipped and left in place, as are unreadable
    lines (logged). A missing file has no entries.
    """
    return _entries(Path(path))


def _entries(path: Path) -> Generator[dict[str, Any], None, int]:
    """The entries of ``path``; the generator returns how many unreadable complete lines it skipped."""
    skipped = 0
    if not path.exists():
        return skipped
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                break  # A last line still being written (or torn): not an entry yet, even if it parses.
            if not raw.strip():
                continue
            entry = _decode(raw)
            if entry is None:
                skipped += 1
                _logger.warning("%s:%d: skipping an unreadable entry (%d bytes)", path, number, len(raw))
                continue
            yield entry
    return skipped


class _Pending:
    """One entry waiting to be written, and what became of it (set by the writer that took it)."""

    __slots__ = ("data", "done", "error")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = False
        self.error: BaseException | None = None


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows; appends still go to the end (O_APPEND).
    return os.read(fd, size)


def _encode(entry: Mapping[str, Any]) -> bytes:
    if not isinstance(entry, Mapping):
        raise TypeError(f"A journal entry must be a mapping (a JSON object), got {type(entry).__name__}.")
    return (json_line(entry, default=str) + "\n").encode("utf-8")


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return entry if isinstance(entry, dict) else None
