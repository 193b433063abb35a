"""An append-only JSON Lines journal that survives ``kill -9``: the resume log of eval and synth runs.

Each entry is one line written with a single ``write`` and ``fsync``ed, so a killed process loses at
most the entry being written. On open, a torn last line is cut off (not merely skipped): otherwise
the next append would be glued onto the fragment and corrupt a good entry.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusion_dspy.text_safety import json_line

__all__ = ["Journal"]

_logger = logging.getLogger(__name__)


class Journal:
    """Append JSON objects to a file, durably; read back every complete entry.

    Args:
        path: The ``.jsonl`` file (created with its parent directories).

    Attributes:
        repaired_bytes: Bytes of a torn trailing line removed when the journal was opened.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.repaired_bytes = self._repair()

    def _repair(self) -> int:
        """Truncate the file after its last newline (a write cut short by a kill)."""
        if not self.path.exists():
            return 0
        with self.path.open("rb+") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size == 0:
                return 0
            position = size
            chunk = 4096
            while position > 0:
                start = max(0, position - chunk)
                handle.seek(start)
                data = handle.read(position - start)
                newline = data.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                position = start
            else:
                keep = 0
            if keep < size:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
                _logger.warning("%s: removed a torn last entry (%d bytes) left by a killed run", self.path, size - keep)
            return size - keep

    def append(self, entry: dict[str, Any]) -> None:
        """Write one entry and flush it to disk before returning."""
        line = json_line(entry, default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    _logger.warning("%s:%d: skipping an unreadable entry", self.path, number)
