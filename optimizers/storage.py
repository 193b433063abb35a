"""Open an Optuna storage from what the user passed, and decide where the bank lives beside it.

* ``None``: in memory (study and bank die with the process).
* ``"sqlite:///study.db"``, ``"postgresql://..."``, any SQLAlchemy URL: :class:`optuna.storages.RDBStorage`
  with heartbeats, so a trial whose process died (``kill -9``, a lost machine) is failed after the
  grace period and re-queued by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (Optuna 5's
  name for ``RetryFailedTrialCallback``).
* Any other string or path: an Optuna journal file (:class:`optuna.storages.journal.JournalFileBackend`),
  for one process (its trials may run in ``n_jobs`` threads). It has no heartbeats, so it cannot tell a
  live worker's trial from a dead one: ``work()`` refuses it and asks for a database.
* A ready :class:`optuna.storages.BaseStorage`: used as is; its bank goes beside its database file or
  journal file when it has one (else pass ``bank_dir``, or the bank lives in memory, with a warning).

The bank and the evaluation memo go to ``<database or journal file>.fusion/<study name>/``; for a
server database (PostgreSQL, MySQL) to ``./.fusion-dspy/<study name>/`` unless ``bank_dir`` says
otherwise (point it at a shared filesystem to share draws between machines).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path

import optuna

__all__ = ["OpenedStorage", "open_storage"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OpenedStorage:
    """An Optuna storage and the directory where its studies' banks live (``None``: in memory)."""

    storage: optuna.storages.BaseStorage
    bank_root: Path | None

    @property
    def heartbeat(self) -> bool:
        """Whether the storage can tell a dead worker's trial from a running one."""
        interval = getattr(self.storage, "get_heartbeat_interval", None)
        return interval is not None and interval() is not None


def open_storage(
    storage: str | os.PathLike[str] | optuna.storages.BaseStorage | None,
    *,
    bank_dir: str | os.PathLike[str] | None = None,
    heartbeat_interval: int = 10,
    grace_period: int = 30,
    max_retry: int | None = 3,
) -> OpenedStorage:
    """Open ``storage`` (see the module docstring) with heartbeats for database URLs."""
    root = Path(bank_dir) if bank_dir is not None else None
    if storage is None:
        return OpenedStorage(optuna.storages.InMemoryStorage(), root)
    if isinstance(storage, optuna.storages.BaseStorage):
        if root is None:
            root = _bank_root_of(storage)
        if root is None and not isinstance(storage, optuna.storages.InMemoryStorage):
            _logger.warning(
                "The candidate bank of a %s passed as an object lives in memory: a resumed study pays for its "
                "draws again. Pass bank_dir= (Storage(bank_dir=...)) to keep it on disk.", type(storage).__name__)
        return OpenedStorage(storage, root)
    text = os.fspath(storage)
    if "://" in text:
        from fusion_dspy.optimizers.options import Storage

        Storage(heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry)  # The rules.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            rdb = optuna.storages.RDBStorage(
                text,
                engine_kwargs={"pool_pre_ping": True} if not text.startswith("sqlite") else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry,
            )
        return OpenedStorage(rdb, root if root is not None else _bank_root_of_url(text))
    from optuna.storages.journal import JournalFileBackend

    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return OpenedStorage(journal, root if root is not None else Path(str(path) + ".fusion"))


def _bank_root_of_url(url: str) -> Path | None:
    """Beside a SQLite file, ``./.fusion-dspy`` for a server database, ``None`` for SQLite in memory."""
    database = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
    if database and database != ":memory:":
        return Path(database + ".fusion")
    return None if url.startswith("sqlite") else Path(".fusion-dspy")


def _bank_root_of(storage: optuna.storages.BaseStorage) -> Path | None:
    """The bank root of a storage object the user opened: from its database URL or journal file, if it has one."""
    url = getattr(storage, "url", None)
    if isinstance(storage, optuna.storages.RDBStorage) and isinstance(url, str):
        return _bank_root_of_url(url)
    backend = getattr(storage, "_backend", None)  # JournalStorage keeps its backend private.
    file_path = getattr(backend, "_file_path", None)
    if isinstance(file_path, str):
        return Path(file_path + ".fusion")
    return None
