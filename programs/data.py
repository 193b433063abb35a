"""Where benchmark data comes from: a local data directory, local files, or a Hugging Face hub name.

Every loader in :mod:`fusion_dspy.programs` accepts ``data_files=`` (explicit local files), falls back
to the project's data directory when one exists, and otherwise asks the hub. This keeps the same
loader usable offline (developer machines, CI with ``FUSION_DSPY_DATA_DIR``) and online (users who
just name a dataset), without ever copying data into the repository.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DATA_DIR_ENV", "check_limit", "data_dir", "find_data_file", "is_data_file", "load_rows"]

_logger = logging.getLogger(__name__)

#: Environment variable naming the benchmark data directory (see ``shared/data/README.md``).
DATA_DIR_ENV = "FUSION_DSPY_DATA_DIR"

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".txt": "text"}


def data_dir() -> Path | None:
    """The benchmark data directory, or ``None`` when there is none.

    ``$FUSION_DSPY_DATA_DIR`` wins; otherwise ``../shared/data`` next to the repository checkout is
    used when it exists (the developers' layout). An installed package has no such sibling, so users
    get ``None`` and the loaders fall back to the hub or to explicit ``data_files``.
    """
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"${DATA_DIR_ENV}={configured!r} is not a directory; fix or unset it.")
        return path
    checkout = Path(__file__).resolve().parent.parent
    sibling = checkout.parent / "shared" / "data"
    return sibling if sibling.is_dir() else None


def find_data_file(relative: str) -> Path | None:
    """``relative`` inside the data directory, if both exist."""
    root = data_dir()
    if root is None:
        return None
    path = root / relative
    return path if path.exists() else None


def is_data_file(data: str | os.PathLike[str]) -> bool:
    """Whether a loader's ``data`` names a local file: it exists, or it ends in a data file extension
    (``.jsonl``, ``.csv``...), so a missing file is reported as missing instead of asked of the hub."""
    return os.path.exists(data) or Path(data).suffix.lower() in _FORMATS


def check_limit(limit: int | None) -> int | None:
    """``limit`` when it is ``None`` or a whole number >= 0; else a ``ValueError`` naming it.

    Every loader's ``limit`` goes through this: ``limit=0`` is no rows, and a negative, fractional or
    boolean limit is refused (a slice would silently drop rows from the end).
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit={limit!r}: pass a whole number >= 0 (the most rows to keep), or None for all.")
    return limit


def load_rows(
    data_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    hub: str | None = None,
    hub_config: str | None = None,
    split: str = "train",
    csv_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Load rows with ``datasets``: local files when given, else the hub dataset ``hub``.

    Args:
        data_files: One or more local files (``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet``/``.txt``);
            the format follows the first file's extension.
        hub: A hub dataset name, used only when ``data_files`` is ``None``.
        hub_config: The hub dataset's configuration name (e.g. ``"main"`` for GSM8K).
        split: The split to read (local files always form a ``train`` split).
        csv_options: Extra ``csv`` builder options (``delimiter``, ``column_names``, ``quoting`` ...).
        cache_dir: ``datasets``' Arrow cache directory (default: ``$HF_DATASETS_CACHE``).

    Returns:
        The rows as plain dicts, in file order.

    Raises:
        FileNotFoundError: When neither files nor a hub name are available (the message says how to
            point the loader at data).
    """
    import datasets

    if data_files is None and hub is None:
        raise FileNotFoundError(
            f"No data: pass data_files=... (local files), set ${DATA_DIR_ENV} to a directory holding the "
            "benchmark files, or pass hub=... to load from the Hugging Face hub."
        )
    if data_files is not None:
        files = [os.fspath(f) for f in ([data_files] if isinstance(data_files, (str, os.PathLike)) else data_files)]
        if not files:
            raise ValueError("data_files=[] names no file: pass at least one path, or None to use hub=....")
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            raise FileNotFoundError(f"Data file(s) not found: {missing}.")
        suffix = Path(files[0]).suffix.lower()
        if suffix not in _FORMATS:
            raise ValueError(f"Unsupported data file type {suffix!r}; use one of {sorted(_FORMATS)}.")
        builder = _FORMATS[suffix]
        options: dict[str, Any] = dict(csv_options or {}) if builder == "csv" else {}
        if suffix == ".tsv":
            options.setdefault("delimiter", "\t")
        _logger.debug("loading %s as %s", files, builder)
        dataset = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir, **options)
    else:
        _logger.info("loading hub dataset %s (%s, split %s)", hub, hub_config, split)
        dataset = datasets.load_dataset(hub, hub_config, split=split, cache_dir=cache_dir)
    return [dict(row) for row in dataset]
